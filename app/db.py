"""Database engines and sessions, one set per process (a forked worker child gets its own).

:func:`engine` serves sessions, migrations and anything transactional. :func:`status_engine`
serves the engine's own single-statement status writes (claim, outcome, progress, leases): in
autocommit, with ``synchronous_commit = off`` (a status write lost to a database crash only
makes a job run again, which at-least-once delivery allows anyway). With the completion riding
along with the process's next claim, a job costs one round trip. Handlers get a session bound
to their job's tenant.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

from sqlalchemy import Connection, Engine, create_engine, event, exc, text
from sqlalchemy.orm import Session, sessionmaker

from app.settings import settings

ROOT = Path(__file__).resolve().parent.parent

_lock = threading.Lock()
_engines: dict[tuple[int, str, bool], Engine] = {}


def sqlalchemy_url(url: str) -> str:
    """``url`` with the driver named: plain ``postgresql://`` means psycopg2 here."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg2://" + url[len(prefix):]
    return url


#: A pooled connection idle longer than this is pinged before use (it may have been cut by a
#: database restart); a busy one is not, which saves a round trip per checkout.
PING_IDLE_SECONDS = 10.0


def _ping_if_idle(dbapi_conn, record, proxy) -> None:
    if time.monotonic() - record.info.get("checked_in", 0.0) < PING_IDLE_SECONDS:
        return
    try:
        cur = dbapi_conn.cursor()
        cur.execute("SELECT 1")
        cur.close()
    except Exception as error:
        # The pool discards this connection and tries a fresh one.
        raise exc.DisconnectionError(str(error)) from error


def _note_checkin(dbapi_conn, record) -> None:
    record.info["checked_in"] = time.monotonic()


def _create(url: str, *, status: bool) -> Engine:
    connect_args: dict = {"application_name": "jobq", "connect_timeout": 5}
    options: dict = {}
    if status:
        connect_args["options"] = "-c synchronous_commit=off"
        options["isolation_level"] = "AUTOCOMMIT"
    # hide_parameters: a statement's parameters (a job's intent_params, a handler's values)
    # never ride along in an error's text into error_message, events, logs or Flower.
    eng = create_engine(url, pool_size=int(os.cpu_count() or 2) + 4, max_overflow=10,
                        pool_recycle=1800, connect_args=connect_args, hide_parameters=True,
                        **options)
    event.listen(eng, "checkout", _ping_if_idle)
    event.listen(eng, "checkin", _note_checkin)
    if status:
        from app import audit

        event.listen(eng, "connect", lambda dbapi_conn, _record: audit.prepare(dbapi_conn))
    return eng


def _get(url: str | None, *, status: bool) -> Engine:
    url = sqlalchemy_url(url or settings.require_database_url())
    key = (os.getpid(), url, status)
    found = _engines.get(key)
    if found is not None:
        return found
    with _lock:
        found = _engines.get(key)
        if found is None:
            found = _engines[key] = _create(url, status=status)
        return found


def engine(url: str | None = None) -> Engine:
    """The process's engine for ``url`` (default: ``DATABASE_URL``)."""
    return _get(url, status=False)


def status_engine() -> Engine:
    """Autocommit connections with asynchronous commit, for single-statement status writes."""
    return _get(None, status=True)


def status_conn() -> Connection:
    """A connection from :func:`status_engine` (use it as a context manager)."""
    return status_engine().connect()


def dispose_after_fork() -> None:
    """Forget connections inherited from a parent process without closing its sockets."""
    for key, eng in list(_engines.items()):
        if key[0] != os.getpid():
            eng.dispose(close=False)
            _engines.pop(key, None)


_sessionmaker: dict[int, sessionmaker[Session]] = {}


def session() -> Session:
    """A plain ORM session on the engine's database (the caller commits)."""
    maker = _sessionmaker.get(os.getpid())
    if maker is None:
        maker = _sessionmaker[os.getpid()] = sessionmaker(engine(), expire_on_commit=False)
    return maker()


#: The role a tenant-bound transaction runs as. Row-level security (alembic 0003) shows it only
#: the rows of the tenant in ``app.tenant_id``; the engine's own connections log in as the
#: tables' owner, which the policies do not bind (status writes, sweep, recovery, dispatch).
TENANT_ROLE = "jobq_tenant"

# Both ``SET LOCAL``: they end with the transaction and never leak to the next user of the
# pooled connection. One statement, so binding costs one round trip.
_BIND_TENANT = text(
    "SELECT set_config('app.tenant_id', :t, true), set_config('role', :role, true)"
)


def bind_tenant(conn: Session | Connection, tenant_id: str) -> None:
    """Bind ``conn``'s current transaction to one tenant: ``app.tenant_id`` for the policies,
    and :data:`TENANT_ROLE`, which they bind, so it sees and changes that tenant's rows only.
    """
    conn.execute(_BIND_TENANT, {"t": str(tenant_id), "role": TENANT_ROLE})


def tenant_session(tenant_id: str) -> Session:
    """A session whose every transaction is bound to ``tenant_id`` as it begins.

    Binding on begin (not up front) costs nothing when the handler never touches the database,
    and binds again after each commit of a checkpoint.
    """
    s = session()
    event.listen(s, "after_begin", lambda _s, _tx, conn: bind_tenant(conn, tenant_id))
    return s


def alembic_config(url: str | None = None):
    from alembic.config import Config

    cfg = Config(str(ROOT / "alembic.ini"))
    cfg.set_main_option("script_location", str(ROOT / "alembic"))
    cfg.attributes["database_url"] = url or settings.require_database_url()
    return cfg


def migrate(url: str | None = None, revision: str = "head") -> None:
    """Bring the database at ``url`` to ``revision`` (default: the newest)."""
    from alembic import command

    command.upgrade(alembic_config(url), revision)
