"""Retention: finished jobs and their events are deleted once their academy's rule allows.

Each end state has a rule: completed and cancelled jobs are kept ``JOBQ_RETENTION_DAYS``
(default 90), failed ones ``JOBQ_RETENTION_FAILED_DAYS`` (default 365, for audits of what went
wrong), and an academy may keep any state longer or shorter (``jobq tenants set --keep-failed``,
:func:`app.intake.actions.set_tenant_retention`). Each (academy, state) with something past its
rule is walked from its oldest row in keyset batches (``JOBQ_RETENTION_BATCH`` rows a statement,
shared by up to :data:`PAIRS_PER_STATEMENT` pairs), each in its own short transaction: a batch
reads what it deletes (and the few parents a young child holds), never what the rules keep nor
what an earlier batch went past. Schedule runs age out alike.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from dataclasses import dataclass

from app.core.settings import settings
from app.store import db, jobstore, schedules

log = logging.getLogger("jobq.retention")

#: One run stops deleting after this long and the next run goes on, so a large first clean-up
#: never holds a maintenance worker process (which the sweep needs every second) for long.
TIME_BUDGET_SECONDS = 20.0


#: (academy, end state) pairs one statement deletes from: small academies share a statement
#: instead of costing one each; each takes an equal share of the batch.
PAIRS_PER_STATEMENT = 64


@dataclass(frozen=True)
class RetentionReport:
    jobs: int
    schedule_runs: int
    #: False when the time budget ran out with old rows left for the next run.
    done: bool


def delete_expired(*, days: int | None = None, failed_days: int | None = None,
                   batch: int | None = None,
                   budget: float = TIME_BUDGET_SECONDS) -> RetentionReport:
    """Delete what is past its rule, batch by batch, within ``budget`` seconds. ``days`` and
    ``failed_days`` replace the defaults (not an academy's own rules) for this run."""
    defaults = jobstore.default_retention_days(days=days, failed_days=failed_days)
    batch = batch or settings.retention_batch
    deadline = time.monotonic() + budget
    deleted = 0
    with db.engine().begin() as conn:
        waiting = deque(jobstore.expired_pairs(conn, defaults))
    while waiting:
        pairs = [waiting.popleft() for _ in range(min(PAIRS_PER_STATEMENT, len(waiting)))]
        per_pair = max(1, -(-batch // len(pairs)))
        with db.engine().begin() as conn:
            done = jobstore.delete_expired(conn, pairs, defaults=defaults, per_pair=per_pair)
        for pair in pairs:
            got = done.get((pair.tenant_id, pair.status))
            if got is None:
                continue
            deleted += got.deleted
            if got.read >= per_pair:  # more of it may be past its rule: on from its cursor
                pair.after = got.cursor
                waiting.append(pair)
        if waiting and time.monotonic() > deadline:
            log.info("retention deleted %d job(s); more are due, the next run goes on",
                     deleted)
            return RetentionReport(deleted, 0, done=False)
    runs = 0
    while time.monotonic() <= deadline:
        with db.engine().begin() as conn:
            n = schedules.delete_old_runs(conn, days=defaults["completed"], batch=batch)
        runs += n
        if n < batch:
            break
    if deleted or runs:
        log.info("retention deleted %d job(s) with their events and %d schedule run(s)",
                 deleted, runs)
    return RetentionReport(deleted, runs, done=True)
