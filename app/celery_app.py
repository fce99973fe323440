"""The Celery application: configured from ``celeryconfig``, one task per manifest intent.

Importing this registers every intent's task without importing any handler module.
"""

from __future__ import annotations

import gc
import time

from celery import Celery, states
from celery.signals import (
    beat_embedded_init,
    beat_init,
    setup_logging,
    task_postrun,
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
    # What is loaded by now lives as long as the process: full collections skip it (cheap).
    gc.freeze()


#: Seconds between the garbage collections that follow failed or retried runs.
FAILURE_GC_INTERVAL = 1.0
_last_failure_gc = 0.0


@task_postrun.connect
def _collect_failure_garbage(state: str | None = None, **_: object) -> None:
    # Each failed or retried run leaves Celery's exception info (on Python 3.11, the code
    # positions of every frame) as cyclic garbage that only Python's rare full collection
    # frees: a pool process grew from ~95 MB to ~250 MB. Collect it, at most once a second.
    global _last_failure_gc
    if state in (states.FAILURE, states.RETRY) and \
            time.monotonic() - _last_failure_gc >= FAILURE_GC_INTERVAL:
        _last_failure_gc = time.monotonic()
        gc.collect()


@worker_process_shutdown.connect
@worker_shutdown.connect
def _flush_completions(**_: object) -> None:
    # Completions still gathering are written before the process goes.
    completions.writer.flush()


@beat_init.connect
def _beat_sends_no_sent_events(sender=None, **_: object) -> None:
    # Beat publishes only the caretaking tasks, several a second: their task-sent events would
    # push the academies' jobs off Flower's first page (they send no other events either).
    sender.app.conf.task_send_sent_event = False


@beat_embedded_init.connect
def _embedded_beat_keeps_sent_events(sender=None, **_: object) -> None:
    # ``worker -B``: the process also publishes jobs, whose sent events Flower shows.
    sender.app.conf.task_send_sent_event = True


@setup_logging.connect
def _setup_logging(loglevel=None, **_: object) -> None:
    configure_logging(loglevel)


# The engine's own tasks register on import.
from app import dispatch, maintenance  # noqa: E402,F401
