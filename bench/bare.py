"""Bare Celery, the baseline: the same broker and worker settings as jobq, a no-op task,
no database at all. ``celery -A bench.bare worker`` runs it."""

from __future__ import annotations

from celery import Celery
from kombu import Exchange, Queue

import celeryconfig

app = Celery("bare")
app.config_from_object(celeryconfig)
app.conf.update(
    task_queues=[Queue("bare", Exchange("bare"), routing_key="bare")],
    task_default_queue="bare",
    beat_schedule={},
)


@app.task(name="bare.noop", ignore_result=True, acks_late=True)
def noop(tenant_id: str | None = None, job_id: str | None = None) -> None:
    """Does nothing; takes the same keyword arguments as a jobq message."""
    return None
