"""This process's liveness lock: taken before its first run and held on a connection of its own
for as long as the process lives (app.store.liveness). Its runs' lease owners carry the lock's
token, so lost-run recovery knows a dead process at once, and a slow live one as alive.

Without the lock (the database unreachable, a pooler that drops session locks) the runs carry no
token and their leases alone decide, as before.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import select
import threading
import time
from typing import Any

from app.store import db, liveness

log = logging.getLogger("jobq.lease")

#: Seconds between attempts to take the lock while the database is unreachable.
RETRY_SECONDS = 5.0


class Liveness:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pid = os.getpid()
        self._token = secrets.token_hex(8)
        self._conn: Any = None
        self._next_try = 0.0
        #: A parent's connections, inherited by a fork: never used nor closed here (closing
        #: would end the parent's session and free its lock), never collected either.
        self._inherited: list[Any] = []

    def token(self) -> str | None:
        """The process's token while it holds its lock (taken or taken again here, the same
        token each time); None when it cannot: then leases alone decide."""
        with self._lock:
            if self._pid != os.getpid():
                self._forked()
            if self._conn is not None and not self._alive(self._conn):
                with contextlib.suppress(Exception):
                    self._conn.invalidate()
                self._conn = None
                log.warning("the liveness lock's connection ended; taking the lock again")
            if self._conn is None and time.monotonic() >= self._next_try:
                self._take()
            return self._token if self._conn is not None else None

    #: Called by the lease keeper on every round: notices a database restart within a round.
    check = token

    def _forked(self) -> None:
        if self._conn is not None:
            self._inherited.append(self._conn)
        self._conn = None
        self._pid = os.getpid()
        self._token = secrets.token_hex(8)
        self._next_try = 0.0

    @staticmethod
    def _alive(conn: Any) -> bool:
        # An idle session has nothing to read; one the server ended (a restart, a termination)
        # has its farewell or end of file. Only then a round trip tells for sure.
        dbapi = conn.connection.dbapi_connection
        if dbapi is None or dbapi.closed:
            return False
        try:
            readable, _, _ = select.select([dbapi.fileno()], [], [], 0)
            if not readable:
                return True
            liveness.ping(conn)
            return True
        except Exception:
            return False

    def _take(self) -> None:
        try:
            conn = db.liveness_connection()
            try:
                if liveness.lock(conn, self._token):
                    self._conn = conn
                    return
            except BaseException:
                conn.close()
                raise
            conn.close()
            log.warning("another session holds this process's liveness lock; its runs' leases "
                        "alone tell whether it lives")
        except Exception as exc:
            log.warning("could not take the liveness lock (leases alone decide meanwhile): %s",
                        exc)
        self._next_try = time.monotonic() + RETRY_SECONDS


process = Liveness()
