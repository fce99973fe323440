"""Retention: finished jobs and their events are deleted once they are old enough.

Completed and cancelled jobs go after ``JOBQ_RETENTION_DAYS`` (default 90), failed ones after
``JOBQ_RETENTION_FAILED_DAYS`` (kept longer, for audits of what went wrong), in batches of
``JOBQ_RETENTION_BATCH``, each in its own short transaction. Schedule runs age out alike.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from app.core.settings import settings
from app.store import db, jobstore, schedules

log = logging.getLogger("jobq.retention")

#: One run stops deleting after this long and the next run goes on, so a large first clean-up
#: never holds a maintenance worker process (which the sweep needs every second) for long.
TIME_BUDGET_SECONDS = 20.0

#: Completed and cancelled jobs age by ``days``; failed ones by ``failed_days``.
_KEPT_SHORTER = ("completed", "cancelled")
_KEPT_LONGER = ("failed",)


@dataclass(frozen=True)
class RetentionReport:
    jobs: int
    schedule_runs: int
    #: False when the time budget ran out with old rows left for the next run.
    done: bool


def delete_expired(*, days: int | None = None, failed_days: int | None = None,
                   batch: int | None = None,
                   budget: float = TIME_BUDGET_SECONDS) -> RetentionReport:
    """Delete what is past its retention age, batch by batch, within ``budget`` seconds."""
    days = days or settings.retention_days
    failed_days = failed_days or settings.retention_failed_days
    batch = batch or settings.retention_batch
    deadline = time.monotonic() + budget
    deleted = 0
    for statuses, older_than in ((_KEPT_SHORTER, days), (_KEPT_LONGER, failed_days)):
        while True:
            with db.engine().begin() as conn:
                n = jobstore.delete_expired(conn, statuses=statuses, older_than_days=older_than,
                                         days=days, failed_days=failed_days, batch=batch)
            deleted += n
            if n < batch:
                break
            if time.monotonic() > deadline:
                log.info("retention deleted %d job(s); more are due, the next run goes on",
                         deleted)
                return RetentionReport(deleted, 0, done=False)
    runs = 0
    while time.monotonic() <= deadline:
        with db.engine().begin() as conn:
            n = schedules.delete_old_runs(conn, days=days, batch=batch)
        runs += n
        if n < batch:
            break
    if deleted or runs:
        log.info("retention deleted %d job(s) with their events and %d schedule run(s)",
                 deleted, runs)
    return RetentionReport(deleted, runs, done=True)
