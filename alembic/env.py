"""Alembic environment: the URL comes from jobq's settings, the target from its models."""

from __future__ import annotations

from logging.config import fileConfig

from alembic import context
from sqlalchemy import create_engine, pool

from app.core.settings import settings
from app.core.urls import handler_url_for, url_user
from app.store.db import sqlalchemy_url
from app.store.models import Base

config = context.config
if config.config_file_name is not None and config.attributes.get("configure_logger", True):
    fileConfig(config.config_file_name, disable_existing_loggers=False)

target_metadata = Base.metadata


def _import_domain_models() -> None:
    # Tables of the handlers' domain live beside the handlers; all share one metadata.
    try:
        import handlers.models  # noqa: F401
    except ModuleNotFoundError as exc:
        if exc.name != "handlers.models":
            raise


_import_domain_models()


def _url() -> str:
    return sqlalchemy_url(config.attributes.get("database_url") or settings.require_database_url())


def _handler_role() -> None:
    """The role handlers log in as, and its password, for the migration that grants to it:
    the user of JOBQ_HANDLER_DATABASE_URL, or the default role when it is derived."""
    url = (config.attributes.get("handler_database_url") or settings.handler_database_url
           or handler_url_for(config.attributes.get("database_url")
                              or settings.require_database_url()))
    role, password = url_user(url)
    config.attributes.setdefault("handler_role", role)
    config.attributes.setdefault("handler_password", password)


_handler_role()


def run_migrations_offline() -> None:
    context.configure(url=_url(), target_metadata=target_metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    engine = create_engine(_url(), poolclass=pool.NullPool)
    with engine.connect() as connection:
        context.configure(connection=connection, target_metadata=target_metadata,
                          compare_type=True, compare_server_default=True)
        with context.begin_transaction():
            # Two processes migrating at once (several containers starting) take turns.
            connection.exec_driver_sql("SELECT pg_advisory_xact_lock(7283910)")
            context.run_migrations()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
