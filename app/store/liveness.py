"""Worker liveness in PostgreSQL: each process that runs jobs holds a session-level advisory
lock for as long as it lives, keyed by a random token that its runs' lease owners carry
(``host:pid:l<token>-<run token>``). The database frees the lock the moment the process's
connection ends, so lost-run recovery can tell a dead owner (lock free) from a slow one (lock
held, even when a handler blocked in C code let its lease lapse) without waiting out a lease.
"""

from __future__ import annotations

from sqlalchemy import Connection, text

#: The first key of every liveness lock ('jobq' in ASCII): apart from anyone else's locks.
NAMESPACE = 0x6A6F6271

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


def has_token(column: str) -> str:
    """SQL: whether the lease owner ``column`` carries a process token."""
    return f"{OWNER_TOKEN.format(column=column)} IS NOT NULL"


#: Take this process's liveness lock (on its own connection, which keeps it).
LOCK = text(f"SELECT pg_try_advisory_lock({NAMESPACE}, hashtext(:token))")

#: Whether a process token's lock is held by anyone now (tests, ``jobq`` diagnostics).
HELD = text(f"SELECT hashtext(:token)::oid IN ({LIVE_KEYS})")


#: Whether a session that had something to read is still there.
PING = text("SELECT 1")


def ping(conn: Connection) -> None:
    conn.execute(PING)


def lock(conn: Connection, token: str) -> bool:
    """Take the lock of ``token`` on ``conn``; False when another session holds it."""
    return bool(conn.execute(LOCK, {"token": token}).scalar_one())


def held(conn: Connection, token: str) -> bool:
    return bool(conn.execute(HELD, {"token": token}).scalar_one())
