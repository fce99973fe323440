"""This process's liveness lock: taken before its first run and held on a connection of its own
for as long as the process lives (app.store.liveness). Its runs' lease owners carry the lock's
token, so lost-run recovery knows a dead process at once, and a slow live one as alive.

Without the lock (the database unreachable, a pooler that drops session locks) the runs carry no
token and their leases alone decide, as before.
"""

from __future__ import annotations

import os
import secrets

from app.store import liveness


class Liveness:
    def __init__(self) -> None:
        self._pid = os.getpid()
        self._lock = liveness.SessionLock(liveness.LOCK_PROCESS, self._params())

    @staticmethod
    def _params() -> dict[str, str]:
        return {"token": secrets.token_hex(8)}

    def token(self) -> str | None:
        """The process's token while it holds its lock (taken or taken again here, the same
        token each time); None when it cannot: then leases alone decide."""
        if self._pid != os.getpid():  # a forked child: a token of its own
            self._pid = os.getpid()
            self._lock.params = self._params()
        return self._lock.params["token"] if self._lock.hold() else None

    #: Called by the lease keeper on every round: notices a database restart within a round.
    check = token


process = Liveness()
