"""What operators (and callers) do to existing jobs: cancel one (its run is stopped where it
runs), see how a cancelled run ended, run failed or cancelled jobs again (optionally on
corrected parameters), and tell workers to forget the revokes a cancel left.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass

from app.broker.celery_app import celery_app
from app.store import db, jobstore

log = logging.getLogger("jobq.dispatch")


def cancel(job_id: str, *, reason: str = "cancelled", by: str = "api") -> str | None:
    """Cancel a pending or running job; the status it had, or None when it was neither.

    A pending job never runs. A running job's run is stopped by its own worker process within
    about a second, on every pool: at its next Python step (a call blocked in C code finishes
    first: a database statement, and on a threads-pool worker also a long sleep or network
    wait). Its uncommitted work is rolled back, and its end is recorded as a ``stopped`` event;
    :func:`run_stopped` waits for it.
    """
    job_id = str(uuid.UUID(str(job_id)))
    with db.engine().begin() as conn:
        was = jobstore.cancel(conn, job_id, reason=reason, by=by)
    if was is not None:
        # Drops a message not yet run. No ``terminate``: that signals whichever task the pool
        # process runs by then; the run's own process stops it (app.run.lease, app.run.stopping).
        celery_app.control.revoke(job_id)
        log.info("job cancelled (was %s)", was, extra={"job_id": job_id})
    return was


@dataclass(frozen=True)
class StoppedRun:
    """How the run of a job cancelled while it ran came to its end."""

    #: Seconds from the cancel to the run's end, by the database's clock.
    after: float
    worker: str | None
    #: True: the engine interrupted it. False: it finished first, and its outcome was discarded.
    interrupted: bool
    #: How long the run had been going.
    ran_seconds: float | None


def run_stopped(job_id: str, *, wait: float = 0.0) -> StoppedRun | None:
    """The end of a cancelled job's run, waiting up to ``wait`` seconds for it; None when it
    has not ended (yet), or when the job was not running when it was cancelled."""
    job_id = str(uuid.UUID(str(job_id)))
    deadline = time.monotonic() + wait
    while True:
        with db.engine().connect() as conn:
            found = jobstore.stopped_after_cancel(conn, job_id)
        if found is not None:
            after, worker, detail = found
            ran_ms = detail.get("ran_ms")
            return StoppedRun(after, worker, bool(detail.get("interrupted")),
                              None if ran_ms is None else ran_ms / 1000)
        if time.monotonic() >= deadline:
            return None
        time.sleep(0.05)



def forget_revoked(job_ids: Iterable[str]) -> None:
    """Let workers run these jobs again: a cancel revoked their ids, and a retried job keeps its id.

    Fire and forget: should a message overtake it and be dropped, the sweep sends it again.
    """
    ids = list(job_ids)
    if ids:
        try:
            celery_app.control.broadcast("jobq_forget_revoked", arguments={"ids": ids})
        except Exception as exc:
            log.warning("could not tell workers to forget %d revoke(s): %s", len(ids), exc)


@dataclass(frozen=True)
class TenantLimits:
    """A tenant's fair-scheduling limits after a change."""

    tenant_id: str
    weight: float
    max_running: int | None
    #: Caps on single queues.
    queue_max_running: dict[str, int]


def set_tenant_limits(tenant_id: str, *, weight: float | None = None,
                      max_running: int | None = None, queue: str | None = None,
                      by: str = "api") -> TenantLimits:
    """Change a tenant's share and cap, live (the feeders read them at every pick), recorded
    in ``tenant_events`` with ``by``.

    ``weight``: its share of a queue while others wait too (default 1; 2 gets twice the jobs
    of a tenant of weight 1). ``max_running``: at most this many of its jobs running or handed
    to a worker at once, across queues, or with ``queue`` on that queue only; 0 removes the
    cap. None leaves a value as it is. Raises ValueError naming a bad value, LookupError for
    an unknown tenant.
    """
    import math

    from app.core.manifest import QUEUES
    from app.store import tenants

    tenant_id = str(uuid.UUID(str(tenant_id)))
    if weight is not None:
        if isinstance(weight, bool) or not isinstance(weight, int | float) \
                or not math.isfinite(weight) or weight <= 0:
            raise ValueError(f"weight must be a number above 0, not {weight!r}")
        if queue is not None:
            raise ValueError("weight is the tenant's, on every queue: give it without queue")
    if max_running is not None and (isinstance(max_running, bool)
                                    or not isinstance(max_running, int) or max_running < 0):
        raise ValueError(f"max_running must be a whole number, 0 for no cap, not {max_running!r}")
    if queue is not None and queue not in QUEUES:
        raise ValueError(f"queue {queue!r} is not one of {', '.join(QUEUES)}")
    with db.engine().begin() as conn:
        if queue is not None:
            if tenants.status_of(conn, tenant_id) is None:
                raise LookupError(f"no tenant {tenant_id}")
            if max_running is not None:
                tenants.set_queue_limit(conn, tenant_id, queue, max_running or None, by=by)
            row = tenants.set_limits(conn, tenant_id, by=by)
        else:
            row = tenants.set_limits(conn, tenant_id, by=by, weight=weight,
                                     max_running=max_running or None,
                                     clear_cap=max_running == 0)
        if row is None:
            raise LookupError(f"no tenant {tenant_id}")
        per_queue = tenants.queue_limits(conn, tenant_id)
    log.info("tenant limits: weight %s, max running %s, per queue %s (by %s)", row[2], row[3],
             per_queue, by, extra={"tenant_id": tenant_id})
    return TenantLimits(tenant_id, row[2], row[3], per_queue)
