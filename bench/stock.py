"""Stock Celery, the baseline users recognise: a Celery app as people write it and a no-op task,
run as people run it (``celery -A bench.stock worker -c <cores> -E``: prefork, default prefetch
of 4 per process, early acknowledgement, task events from ``-E``, gossip and mingle on).

Only what sharing the bench's Redis needs is set: the bench's key prefix (so its keys are
dropped with the rest) and a queue of its own (``stock``). Everything else is Celery's default:
JSON serializer, no result backend, no ``task-sent`` events, no time limits.

No ``bench.env`` import here (that would make a second database in the worker): the URL and
prefix come from the environment ``bench.env`` sets up for the processes the bench starts.
"""

from __future__ import annotations

import os

from celery import Celery

app = Celery("stock", broker=os.environ.get("CELERY_BROKER_URL", "redis://127.0.0.1:6379/0"))
app.conf.broker_transport_options = {"global_keyprefix": os.environ.get("JOBQ_REDIS_PREFIX", "")}
app.conf.task_default_queue = "stock"


@app.task
def noop(tenant_id: str | None = None, job_id: str | None = None) -> None:
    """Does nothing; takes the same keyword arguments as a jobq message."""
    return None
