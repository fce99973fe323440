"""Database engine and sessions, one engine per process (a forked worker child gets its own).

The engine's own connections (sweep, audit writes) come from :func:`engine`; handlers get a
session bound to their job's tenant from :func:`tenant_session`.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

from sqlalchemy import Engine, create_engine, text
from sqlalchemy.orm import Session, sessionmaker

from app.settings import settings

ROOT = Path(__file__).resolve().parent.parent

_lock = threading.Lock()
_engines: dict[tuple[int, str], Engine] = {}


def sqlalchemy_url(url: str) -> str:
    """``url`` with the driver named: plain ``postgresql://`` means psycopg2 here."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg2://" + url[len(prefix):]
    return url


def engine(url: str | None = None) -> Engine:
    """The process's engine for ``url`` (default: ``DATABASE_URL``)."""
    url = sqlalchemy_url(url or settings.require_database_url())
    key = (os.getpid(), url)
    found = _engines.get(key)
    if found is not None:
        return found
    with _lock:
        found = _engines.get(key)
        if found is None:
            found = create_engine(
                url,
                pool_size=int(os.cpu_count() or 2) + 4,
                max_overflow=10,
                pool_pre_ping=True,
                pool_recycle=1800,
                connect_args={"application_name": "jobq", "connect_timeout": 5},
            )
            _engines[key] = found
        return found


def dispose_after_fork() -> None:
    """Forget connections inherited from a parent process without closing its sockets."""
    for (pid, _), eng in list(_engines.items()):
        if pid != os.getpid():
            eng.dispose(close=False)
            _engines.pop((pid, _), None)


_sessionmaker: dict[int, sessionmaker[Session]] = {}


def session() -> Session:
    """A plain ORM session on the engine's database (the caller commits)."""
    maker = _sessionmaker.get(os.getpid())
    if maker is None:
        maker = _sessionmaker[os.getpid()] = sessionmaker(engine(), expire_on_commit=False)
    return maker()


def bind_tenant(s: Session, tenant_id: str) -> None:
    """Bind ``s``'s current transaction to one tenant (``app.tenant_id``).

    Row-level security policies read that setting; it is ``SET LOCAL``, so it ends with the
    transaction and never leaks to the next user of the pooled connection.
    """
    s.execute(text("SELECT set_config('app.tenant_id', :t, true)"), {"t": str(tenant_id)})


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
