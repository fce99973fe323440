"""Session-level advisory locks that say a process lives, held on a connection of its own.

Worker liveness: each process that runs jobs holds a lock for as long as it lives, keyed by a
random token that its runs' lease owners carry (``host:pid:l<token>-<run token>``). The
database frees the lock the moment the process's connection ends, so lost-run recovery can tell
a dead owner (lock free) from a slow one (lock held, even when a handler blocked in C code let
its lease lapse) without waiting out a lease.

Beat leadership: of several beats, the one holding :data:`LEADER` sends the caretaking tasks;
when it dies, its lock is free and the next beat to try takes it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import threading
import time
from typing import Any

from sqlalchemy import Connection, TextClause, text

from app.store import db

log = logging.getLogger("jobq.liveness")

#: The first key of every worker liveness lock ('jobq' in ASCII): apart from anyone else's.
NAMESPACE = 0x6A6F6271
#: The first key of jobq's other locks ('jobr'), and the second of beat's leadership.
OTHER_NAMESPACE = 0x6A6F6272
LEADER = 1

#: A lease owner's process token (NULL for owners without one: leases alone decide those).
#: ([:] rather than a bare colon, which SQLAlchemy's text() would read as a parameter.)
OWNER_TOKEN = "substring({column} from '[:]l([0-9a-f]{{16}})-[0-9a-f]+$')"

#: The second keys of the liveness locks held now in this database: the processes alive.
LIVE_KEYS = f"""
    SELECT objid FROM pg_locks
     WHERE locktype = 'advisory' AND classid = {NAMESPACE} AND objsubid = 2 AND granted
       AND database = (SELECT oid FROM pg_database WHERE datname = current_database())
"""


def owner_alive(column: str) -> str:
    """SQL: whether the process named in the lease owner ``column`` holds its liveness lock
    (false for owners without a token)."""
    return f"coalesce(hashtext({OWNER_TOKEN.format(column=column)})::oid IN ({LIVE_KEYS}), false)"


def token_alive(expression: str) -> str:
    """SQL: whether the process whose token is ``expression`` holds its liveness lock."""
    return f"coalesce(hashtext({expression})::oid IN ({LIVE_KEYS}), false)"


def has_token(column: str) -> str:
    """SQL: whether the lease owner ``column`` carries a process token."""
    return f"{OWNER_TOKEN.format(column=column)} IS NOT NULL"


#: Take a process's liveness lock (on its own connection, which keeps it).
LOCK_PROCESS = text(f"SELECT pg_try_advisory_lock({NAMESPACE}, hashtext(:token))")
#: Take beat's leadership.
LOCK_LEADER = text(f"SELECT pg_try_advisory_lock({OTHER_NAMESPACE}, {LEADER})")
#: Whether a session that had something to read is still there.
PING = text("SELECT 1")


class SessionLock:
    """An advisory lock held on a connection of this process's own for as long as it lives.

    :meth:`hold` takes it when it is not held (the same key every time) and tells whether it
    is; a lock lost with its connection (a database restart) is taken again there. After a
    fork the child holds nothing of its parent's (and never closes its parent's connection).
    """

    def __init__(self, statement: TextClause, params: dict[str, Any] | None = None, *,
                 retry_seconds: float = 5.0) -> None:
        self._statement = statement
        self.params = params or {}
        self._retry_seconds = retry_seconds
        self._lock = threading.Lock()
        self._pid = os.getpid()
        self._conn: Any = None
        self._held = False
        self._next_try = 0.0
        self._failing = False
        self._inherited: list[Any] = []

    def hold(self) -> bool:
        with self._lock:
            if self._pid != os.getpid():
                self._forked()
            if self._conn is not None and not self._alive(self._conn):
                if self._held:
                    log.warning("a lock's connection ended; taking the lock again")
                with contextlib.suppress(Exception):
                    self._conn.invalidate()
                self._conn, self._held = None, False
            if not self._held and time.monotonic() >= self._next_try:
                self._take()
            return self._held

    def release(self) -> None:
        """Let the lock go: its connection closes (held again by the next :meth:`hold`)."""
        with self._lock:
            if self._conn is not None and self._pid == os.getpid():
                with contextlib.suppress(Exception):
                    self._conn.close()
            self._conn, self._held, self._next_try = None, False, 0.0

    def _forked(self) -> None:
        if self._conn is not None:
            self._inherited.append(self._conn)
        self._conn, self._held, self._next_try = None, False, 0.0
        self._pid = os.getpid()

    @staticmethod
    def _alive(conn: Any) -> bool:
        # An idle session has nothing to read; one the server ended (a restart, a termination)
        # has its farewell or end of file. Only then a round trip tells for sure.
        dbapi = conn.connection.dbapi_connection
        if dbapi is None or dbapi.closed:
            return False
        try:
            readable, _, _ = select.select([dbapi.fileno()], [], [], 0)
            if readable:
                conn.execute(PING)
            return True
        except Exception:
            return False

    def _take(self) -> None:
        try:
            if self._conn is None:
                self._conn = db.liveness_connection()
            self._held = bool(self._conn.execute(self._statement, self.params).scalar_one())
            self._failing = False
            if self._held:
                return
        except Exception as exc:
            if not self._failing:  # once per outage, not once per try
                log.warning("could not take a lock (is the database reachable?): %s", exc)
            self._failing = True
            if self._conn is not None:
                with contextlib.suppress(Exception):
                    self._conn.invalidate()
                self._conn = None
        self._next_try = time.monotonic() + self._retry_seconds


def held(conn: Connection, token: str) -> bool:
    """Whether a process token's liveness lock is held by anyone now."""
    return bool(conn.execute(text(f"SELECT hashtext(:token)::oid IN ({LIVE_KEYS})"),
                             {"token": token}).scalar_one())
