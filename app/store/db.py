"""Database engines and sessions, one set per process (a forked worker child gets its own).

:func:`engine` serves sessions, migrations and anything transactional. :func:`status_engine`
serves the engine's own single-statement status writes (claim, outcome, progress, leases): in
autocommit, with ``synchronous_commit = off`` (a status write lost to a database crash only
makes a job run again, which at-least-once delivery allows anyway). With the completion riding
along with the process's next claim, a job costs one round trip. Handlers get connections of
their own role (:func:`handler_session`), each transaction bound to their job's tenant.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from sqlalchemy import Connection, Engine, create_engine, event, exc, text
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import NullPool

from app.core.settings import settings
from app.core.urls import HANDLER_ROLE

ROOT = Path(__file__).resolve().parents[2]

_lock = threading.Lock()
_engines: dict[tuple[int, str, bool, bool, bool], Engine] = {}


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


def _note_connect(dbapi_conn, record) -> None:
    # A connection made this instant is not pinged at its first checkout (a round trip that
    # told nothing, on every worker's first job).
    record.info["checked_in"] = time.monotonic()


#: jobq has no hstore column: without this, SQLAlchemy's first connection of each engine looks
#: the type up (a round trip on the way to a worker's first job).
NO_HSTORE = {"use_native_hstore": False}


def _create(url: str, *, status: bool, handler: bool = False, api: bool = False) -> Engine:
    connect_args: dict = {"application_name": "jobq-handler" if handler else "jobq",
                          "connect_timeout": 5}
    options: dict = {}
    if handler and not api:
        options["pool_reset_on_return"] = None  # _discard_session_state rolls back, and more
    if status:
        connect_args["options"] = "-c synchronous_commit=off"
        options["isolation_level"] = "AUTOCOMMIT"
    # hide_parameters: a statement's parameters (a job's intent_params, a handler's values)
    # never ride along in an error's text into error_message, events, logs or Flower.
    eng = create_engine(url, pool_size=int(os.cpu_count() or 2) + 4, max_overflow=10,
                        pool_recycle=1800, connect_args=connect_args, hide_parameters=True,
                        **NO_HSTORE, **options)
    event.listen(eng, "connect", _note_connect)
    event.listen(eng, "checkout", _ping_if_idle)
    event.listen(eng, "checkin", _note_checkin)
    if handler:
        event.listen(eng, "connect", _refuse_unbound_role)
    if handler and not api:
        event.listen(eng, "reset", _discard_session_state)
    return eng


def _get(url: str | None, *, status: bool, handler: bool = False, api: bool = False) -> Engine:
    url = sqlalchemy_url(url or settings.require_database_url())
    key = (os.getpid(), url, status, handler, api)
    found = _engines.get(key)
    if found is not None:
        return found
    with _lock:
        found = _engines.get(key)
        if found is None:
            found = _engines[key] = _create(url, status=status, handler=handler, api=api)
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


def is_outage(error: BaseException) -> bool:
    """Whether ``error`` says the database is away (down, restarting, the connection cut), not
    that a statement was wrong: what callers ride out or retry later."""
    return isinstance(error, exc.OperationalError) or (
        isinstance(error, exc.DBAPIError) and error.connection_invalidated
    )


#: Server-side keepalives of a liveness connection (idle, interval, count): a host that vanished
#: without closing its connections (power, network) frees its liveness lock after about
#: idle + interval * count seconds; a process that dies on a live host frees it at once.
LIVENESS_KEEPALIVES = (5, 2, 3)
_liveness_engines: dict[tuple[int, str], Engine] = {}


def liveness_connection() -> Connection:
    """A connection of its own, never pooled nor shared, to hold this process's liveness lock
    (app.store.liveness) for as long as the process lives. It must reach PostgreSQL itself or a
    pooler in session mode: a transaction-mode pooler would drop session locks."""
    url = sqlalchemy_url(settings.require_database_url())
    key = (os.getpid(), url)
    with _lock:
        eng = _liveness_engines.get(key)
        if eng is None:
            idle, interval, count = LIVENESS_KEEPALIVES
            eng = _liveness_engines[key] = create_engine(
                url, poolclass=NullPool, isolation_level="AUTOCOMMIT", hide_parameters=True,
                **NO_HSTORE,
                connect_args={
                    "application_name": "jobq-liveness", "connect_timeout": 5,
                    "keepalives": 1, "keepalives_idle": idle,
                    "keepalives_interval": interval, "keepalives_count": count,
                    "options": f"-c tcp_keepalives_idle={idle} "
                               f"-c tcp_keepalives_interval={interval} "
                               f"-c tcp_keepalives_count={count}",
                })
    return eng.connect()


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


# --- handlers' connections -------------------------------------------------------------------
#
# A handler's session and journal log in as the handler role (JOBQ_HANDLER_DATABASE_URL), which
# row-level security binds to the tenant of the job it runs (alembic 0004): never as the engine.

#: One round trip as each transaction begins. Its ticket is only good for the job's running
#: attempt (its lease owner, a secret of the run) and for this very connection (its backend pid).
_BIND = text("SELECT jobq_bind(CAST(:job AS uuid), :ticket)")

#: What makes a connection unfit for handlers: it would see every tenant.
_UNBOUND_ROLE = """
    SELECT current_user, r.rolsuper, r.rolbypassrls,
           c.oid IS NOT NULL AND pg_has_role(current_user, c.relowner, 'MEMBER')
      FROM pg_roles r LEFT JOIN pg_class c ON c.oid = to_regclass('job_executions')
     WHERE r.rolname = current_user
"""


class HandlerRoleError(RuntimeError):
    """JOBQ_HANDLER_DATABASE_URL logs in as a role that row-level security does not bind."""


def _backend_pid(conn: Connection) -> int:
    """The PostgreSQL server process behind ``conn``, which a binding's ticket names."""
    dbapi = conn.connection.dbapi_connection
    if dbapi is None:  # invalidated (its server went away): nothing to bind
        raise exc.ResourceClosedError("this connection was invalidated and has no server process")
    return dbapi.info.backend_pid


def bind_ticket(job_id: str, lease_owner: str, backend_pid: int) -> str:
    """What ``jobq_bind`` checks: the job, its run's lease owner and the connection's backend."""
    return hashlib.sha256(f"{job_id}:{lease_owner}:{backend_pid}".encode()).hexdigest()


def bind_job(conn: Connection, job_id: str, lease_owner: str) -> None:
    """Bind ``conn``'s current transaction (a handler connection) to the tenant of ``job_id``,
    which must be running under ``lease_owner``; the binding ends with the transaction."""
    pid = _backend_pid(conn)
    conn.execute(_BIND, {"job": job_id, "ticket": bind_ticket(job_id, lease_owner, pid)})


def _refuse_unbound_role(dbapi_conn, _record) -> None:
    with dbapi_conn.cursor() as cur:
        cur.execute(_UNBOUND_ROLE)
        user, superuser, bypass, owner = cur.fetchone()
    dbapi_conn.rollback()
    if superuser or bypass or owner:
        why = ("a superuser" if superuser else "a role with BYPASSRLS" if bypass
               else "the owner of the engine's tables (or a member of it)")
        raise HandlerRoleError(
            f"JOBQ_HANDLER_DATABASE_URL logs in as {user}, {why}: row-level security would not "
            "bind handlers to their tenant (it must be the handler role that `jobq migrate` "
            f"grants to, {HANDLER_ROLE} by default)")


def _discard_session_state(dbapi_conn, _record, reset_state) -> None:
    """A handler may have left session state behind (temporary tables, settings, prepared
    statements, advisory locks); the next handler on this pooled connection, another tenant's
    perhaps, must find none of it."""
    if reset_state.terminate_only:
        return
    dbapi_conn.rollback()
    dbapi_conn.autocommit = True
    try:
        with dbapi_conn.cursor() as cur:
            cur.execute("DISCARD ALL")
    finally:
        dbapi_conn.autocommit = False


def handler_engine() -> Engine:
    """The process's engine for handlers' connections (JOBQ_HANDLER_DATABASE_URL)."""
    return _get(settings.require_handler_database_url(), status=False, handler=True)


def handler_session(job_id: str, lease_owner: str) -> Session:
    """A session for the handler of ``job_id``: every transaction is bound to the job's tenant
    as it begins (savepoints are inside it).

    Binding on begin (not up front) costs nothing when the handler never touches the database,
    and binds again after each commit of a checkpoint.
    """
    s = Session(handler_engine(), expire_on_commit=False)

    def bind(_session: Session, transaction, conn: Connection) -> None:
        if not transaction.nested:
            bind_job(conn, job_id, lease_owner)

    event.listen(s, "after_begin", bind)
    return s


# --- API requests' connections --------------------------------------------------------------
#
# An HTTP request acts for one tenant: its transactions log in as the handler role too, each
# bound to the request's tenant with a ticket only a holder of the API secret can make (alembic
# 0006), so a request reads and writes through that tenant's row-level security alone.

_BIND_TENANT = text("SELECT jobq_bind_tenant(CAST(:tenant AS uuid), :ticket)")
_API_SECRET = text("SELECT secret FROM jobq_api_secret")
_api_secrets: dict[int, str] = {}


def api_secret() -> str:
    """The secret tenant-binding tickets are made with (read once per process, as the owner)."""
    found = _api_secrets.get(os.getpid())
    if found is None:
        with engine().connect() as conn:
            found = _api_secrets[os.getpid()] = conn.execute(_API_SECRET).scalar_one()
    return found


def bind_tenant(conn: Connection, tenant_id: str) -> None:
    """Bind ``conn``'s current transaction (a handler-role connection) to ``tenant_id``."""
    pid = _backend_pid(conn)
    ticket = hashlib.sha256(f"{api_secret()}:{tenant_id}:{pid}".encode()).hexdigest()
    conn.execute(_BIND_TENANT, {"tenant": tenant_id, "ticket": ticket})


def api_engine() -> Engine:
    """The handler role's connections for API requests. Unlike handlers' they are not reset with
    DISCARD ALL on return (a round trip per request): the API runs only the statements of
    app.store, which leave no session state, and a binding ends with its transaction anyway."""
    return _get(settings.require_handler_database_url(), status=False, handler=True, api=True)


def tenant_session(tenant_id: str) -> Session:
    """A session that sees and changes ``tenant_id``'s rows only: every transaction is bound to
    that tenant as it begins (the caller commits; jobs it submits publish after commit)."""
    tenant_id = str(tenant_id)
    api_secret()  # before the session's transaction, on the engine's own connection
    s = Session(api_engine(), expire_on_commit=False)

    def bind(_session: Session, transaction, conn: Connection) -> None:
        if not transaction.nested:
            bind_tenant(conn, tenant_id)

    event.listen(s, "after_begin", bind)
    return s


@contextlib.contextmanager
def tenant_begin(tenant_id: str) -> Iterator[Connection]:
    """A transaction bound to ``tenant_id`` (committed at the end, rolled back on error)."""
    with tenant_session(tenant_id) as s, s.begin():
        yield s.connection()


@contextlib.contextmanager
def begin(tenant_id: str | None = None) -> Iterator[Connection]:
    """A transaction: bound to ``tenant_id`` when one is given (an API request), else the
    engine's own (operators, beat)."""
    if tenant_id is None:
        with engine().begin() as conn:
            yield conn
    else:
        with tenant_begin(tenant_id) as conn:
            yield conn


# Alembic is imported inside the two functions below: workers and the API never migrate, and
# alembic is slow to import (slower than the rest of the store together).
def alembic_config(url: str | None = None, *, log: bool = True):
    from alembic.config import Config

    cfg = Config(str(ROOT / "alembic.ini"))
    cfg.set_main_option("script_location", str(ROOT / "alembic"))
    cfg.attributes["database_url"] = url or settings.require_database_url()
    cfg.attributes["configure_logger"] = log
    return cfg


def migrate(url: str | None = None, revision: str = "head", *, log: bool = True) -> None:
    """Bring the database at ``url`` to ``revision`` (default: the newest); ``log=False``
    leaves out alembic's line per revision (``jobq run`` says only that it migrated)."""
    from alembic import command

    command.upgrade(alembic_config(url, log=log), revision)
