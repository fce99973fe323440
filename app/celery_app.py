"""The Celery application: configured from ``celeryconfig``, one task per manifest intent.

Importing this registers every intent's task without importing any handler module.
"""

from __future__ import annotations

from celery import Celery
from celery.signals import (
    setup_logging,
    worker_process_init,
    worker_process_shutdown,
    worker_shutdown,
)

from app import completions, db
from app.logs import configure_logging
from app.redis_reconnect import survive_redis_restarts
from app.registry import manifest
from app.runner import register_intents

survive_redis_restarts()

# Every task's messages are checked before Celery reads them (see app.messages).
celery_app = Celery("jobq", task_cls="app.messages:CheckedTask")
celery_app.config_from_object("celeryconfig")
register_intents(celery_app, manifest)


@worker_process_init.connect
def _after_fork(**_: object) -> None:
    # A prefork child must not share the parent's database sockets.
    db.dispose_after_fork()


@worker_process_shutdown.connect
@worker_shutdown.connect
def _flush_completions(**_: object) -> None:
    # Completions still gathering are written before the process goes.
    completions.writer.flush()


@setup_logging.connect
def _setup_logging(loglevel=None, **_: object) -> None:
    configure_logging(loglevel)


# The engine's own tasks register on import.
from app import dispatch, maintenance  # noqa: E402,F401
