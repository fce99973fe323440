"""The Celery application object, configured from ``celeryconfig``.

It imports nothing of jobq above :mod:`app.core` (beside the broker's own leaf modules): the
task declarations live in :mod:`app.tasks`, which Celery imports through ``include`` when a
worker starts. So a caller that only publishes, or sends a control message, builds nothing of
the engine. The hooks here are the ones Celery fires before it imports ``include``.
"""

from __future__ import annotations

import logging

from celery import Celery
from celery.signals import beat_init, setup_logging, worker_init

from app.broker.kombu_patch import (
    front_of_queue,
    record_holders,
    survive_redis_restarts,
    version_problem,
)
from app.core.logs import configure_logging

survive_redis_restarts()
front_of_queue()
record_holders()

# Every task's messages are checked before Celery reads them (see app.broker.messages).
celery_app = Celery("jobq", task_cls="app.broker.messages:CheckedTask", include=["app.tasks"])
celery_app.config_from_object("celeryconfig")


@setup_logging.connect
def _setup_logging(loglevel=None, **_: object) -> None:
    configure_logging(loglevel)


@worker_init.connect
@beat_init.connect
def _say_when_kombu_is_not_the_patched_release(**_: object) -> None:
    problem = version_problem()
    if problem:
        logging.getLogger("jobq.broker").warning(problem)
