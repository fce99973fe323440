"""What operators (and callers) do to existing jobs: cancel one (its run is stopped where it
runs), see how a cancelled run ended, run failed or cancelled jobs again (optionally on
corrected parameters), approve or reject a job awaiting approval, and tell workers to forget the
revokes a cancel left.

Each takes ``tenant_id`` when it acts for one tenant (an API request): it then reads and writes
through that tenant's row-level security only, and another tenant's job is simply not found.
"""

from __future__ import annotations

import logging
import re
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from app.broker.celery_app import celery_app
from app.broker.publish import Outgoing
from app.core import tracing
from app.core.errors import ParamsNotKept
from app.core.registry import manifest
from app.core.settings import settings
from app.handoff import hand_off
from app.store import db, jobstore, reads

log = logging.getLogger("jobq.dispatch")


def cancel(job_id: str, *, reason: str = "cancelled", by: str = "api",
           tenant_id: str | None = None) -> str | None:
    """Cancel a pending or running job; the status it had, or None when it was neither.

    A pending job never runs. A running job's run is stopped by its own worker process within
    about a second, on every pool: at its next Python step (a call blocked in C code finishes
    first: a database statement, and on a threads-pool worker also a long sleep or network
    wait). Its uncommitted work is rolled back, and its end is recorded as a ``stopped`` event;
    :func:`run_stopped` waits for it.
    """
    job_id = str(uuid.UUID(str(job_id)))
    with db.begin(tenant_id) as conn:
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


#: What a channel may be called (``kakao``, ``sms``, ``email``, a provider's own account name).
CHANNEL_NAME = re.compile(r"^[a-z][a-z0-9_-]{0,31}$")


def set_channel_limits(tenant_id: str, channel: str, *, rate: float | None = None,
                       daily: int | None = None, over_daily: str | None = None,
                       by: str = "api") -> dict[str, Any]:
    """Change a tenant's own limits on an outside channel, live (senders read them within a
    second), recorded in ``tenant_events`` with ``by``: ``rate`` messages per second at most
    (its weighted share of the channel may be less), ``daily`` messages per day (Korean day);
    0 removes a limit, None leaves it. ``over_daily``: what would go over the day's quota
    ``wait`` s for the next day (the default) or ``fail`` s with the reason. Returns the limits
    after the change. Raises ValueError naming a bad value, LookupError for an unknown tenant.
    """
    import math

    from app.store import channels, tenants

    tenant_id = str(uuid.UUID(str(tenant_id)))
    if not isinstance(channel, str) or not CHANNEL_NAME.match(channel):
        raise ValueError(f"channel must be a lowercase name such as kakao or sms, not {channel!r}")
    if rate is not None and (isinstance(rate, bool) or not isinstance(rate, int | float)
                             or not math.isfinite(rate) or rate < 0):
        raise ValueError(f"rate must be messages per second, 0 for no cap, not {rate!r}")
    if daily is not None and (isinstance(daily, bool) or not isinstance(daily, int) or daily < 0):
        raise ValueError(f"daily must be a whole number of messages, 0 for no cap, not {daily!r}")
    if over_daily is not None and over_daily not in ("wait", "fail"):
        raise ValueError(f"over_daily must be wait or fail, not {over_daily!r}")
    if rate is None and daily is None and over_daily is None:
        raise ValueError("nothing to change: give rate, daily and/or over_daily")
    with db.engine().begin() as conn:
        if tenants.status_of(conn, tenant_id) is None:
            raise LookupError(f"no tenant {tenant_id}")
        limits = channels.set_channel_limits(
            conn, tenant_id, channel, by=by, rate=rate or None, daily=daily or None,
            over_daily=over_daily, clear_rate=rate == 0, clear_daily=daily == 0)
    log.info("channel limits on %s: %s (by %s)", channel, limits, by,
             extra={"tenant_id": tenant_id})
    return limits


#: The longest rule an academy may set: a century is "keep".
MAX_KEEP_DAYS = 36_500


@dataclass(frozen=True)
class TenantRetention:
    """Days a tenant's finished jobs are kept per end state after a change."""

    tenant_id: str
    #: Its own rules (None: the default for that state).
    own: dict[str, int | None]
    #: What applies: its own rule, else the deployment's default.
    kept: dict[str, int]


def set_tenant_retention(tenant_id: str, *, completed: int | None = None,
                         failed: int | None = None, cancelled: int | None = None,
                         by: str = "api") -> TenantRetention:
    """Change how many days a tenant's finished jobs are kept in each end state, live (the next
    retention run applies it), recorded in ``tenant_events`` with ``by``.

    None leaves a state's rule as it is; 0 returns it to the default (``JOBQ_RETENTION_DAYS``
    for completed and cancelled jobs, ``JOBQ_RETENTION_FAILED_DAYS`` for failed ones). Raises
    ValueError naming a bad value, LookupError for an unknown tenant.
    """
    from app.store import tenants

    tenant_id = str(uuid.UUID(str(tenant_id)))
    asked = {"completed": completed, "failed": failed, "cancelled": cancelled}
    for state, days in asked.items():
        if days is not None and (isinstance(days, bool) or not isinstance(days, int)
                                 or not 0 <= days <= MAX_KEEP_DAYS):
            raise ValueError(f"days to keep {state} jobs must be a whole number from 1 to "
                             f"{MAX_KEEP_DAYS} (0: the default), not {days!r}")
    if all(days is None for days in asked.values()):
        raise ValueError("nothing to change: give days for completed, failed or cancelled jobs")
    with db.engine().begin() as conn:
        own = tenants.set_retention(conn, tenant_id, by=by, **asked)
    if own is None:
        raise LookupError(f"no tenant {tenant_id}")
    defaults = jobstore.default_retention_days()
    kept = {state: own[state] or defaults[state] for state in own}
    log.info("tenant retention: %s (own rules %s, by %s)", kept, own, by,
             extra={"tenant_id": tenant_id})
    return TenantRetention(tenant_id, own, kept)


def set_tenant_status(tenant_id: str, status: str, *, by: str) -> tuple[str | None, int]:
    """Suspend (``suspended``) or resume (``active``) a tenant, recorded in ``tenant_events``
    with ``by``; ``(the status it had, its pending jobs)``, the status None for no such tenant.
    A suspended tenant's pending jobs are held; resumed, they wait in the fair queue again at
    once. A deleted tenant stays deleted."""
    from app.store import tenants

    if status not in ("active", "suspended"):
        raise ValueError(f"status must be active or suspended, not {status!r}")
    tenant_id = str(uuid.UUID(str(tenant_id)))
    with db.engine().begin() as conn:
        was = tenants.set_tenant_status(conn, tenant_id, status, by=by)
        pending = tenants.pending_jobs(conn, tenant_id) if was is not None else 0
    if status == "active" and was not in (None, "active", "deleted"):
        with db.engine().begin() as conn:
            jobstore.flag_due(conn)
    if was is not None and was != status:
        log.info("tenant %s by %s (was %s)", status, by, was, extra={"tenant_id": tenant_id})
    return was, pending


def approve(job_id: str, *, by: str, note: str | None = None,
            tenant_id: str | None = None) -> jobstore.Approved | None:
    """Approve a job awaiting approval: it becomes pending and runs (published at once when it
    is due). None when it was not awaiting approval. Audited with ``by``."""
    job_id = str(uuid.UUID(str(job_id)))
    with db.begin(tenant_id) as conn:
        approved = jobstore.approve(conn, job_id, by=by, note=note,
                                    eta_max=settings.eta_max_seconds)
    if approved is not None and approved.publish:
        intent = manifest.get(approved.intent_key)
        if intent is not None:  # else the sweep refuses it, with the reason, in the table
            hand_off([Outgoing(
                approved.id, approved.tenant_id, approved.intent_key,
                approved.queue or intent.queue, approved.intent_params, intent.secret_params,
                countdown=approved.countdown or None)])
    if approved is not None:
        log.info("job approved by %s", by, extra={"job_id": job_id})
        _traced("approve", job_id, approved.traceparent, {"jobq.approved_by": by})
    return approved


def reject(job_id: str, *, by: str, reason: str | None = None,
           tenant_id: str | None = None) -> bool:
    """Reject a job awaiting approval: it is cancelled and never runs. False when it was not
    awaiting approval. Audited with ``by`` and the reason."""
    job_id = str(uuid.UUID(str(job_id)))
    with db.begin(tenant_id) as conn:
        done = jobstore.reject(conn, job_id, by=by, reason=reason or f"rejected by {by}")
    if done:
        log.info("job rejected by %s", by, extra={"job_id": job_id})
    return done


def requeue(jobs: list[dict[str, Any]], *, by: str, params: dict[str, Any] | None = None,
            tenant_id: str | None = None) -> list[tuple[str, str, str]]:
    """Put failed or cancelled ``jobs`` back to pending; ``(id, was, status)`` of each done
    (status: pending, or awaiting_approval). They wait
    in their queue's fair queue like new work (the feeder publishes them in their turn, a
    window at a time, so retrying ten thousand jobs never floods the broker). A job asked for with an approval that it never got goes back to
    awaiting one instead (a cancel and a retry must not run it unapproved). ``params``: run the (one) job on these validated parameters
    instead, audited.

    Jobs of suspended or deleted tenants are skipped: their work is refused, like their new
    requests. A job refused with parameters that were not kept (too big or not JSON to store)
    runs only on new ones: without ``params`` it raises :class:`ParamsNotKept` and nothing of
    ``jobs`` is requeued (the intent's defaults are never what its caller asked for).
    """
    # A cancel revoked the id in every worker; the job keeps its id, so lift that first
    # (before a feeder can publish it again).
    forget_revoked(job["id"] for job in jobs if job.get("status") == "cancelled")
    done: list[tuple[str, str, str]] = []
    with db.begin(tenant_id) as conn:
        for job in jobs:
            full = job if "tenant_status" in job else _load(conn, job["id"])
            if full is None or full["tenant_status"] != "active":
                continue
            if params is None and full.get("params_dropped"):
                raise ParamsNotKept(
                    f"{params_not_kept(full)}; pass them: requeue(..., params={{...}})",
                    field="intent_params", job_id=full["id"])
            intent = manifest.get(full["intent_key"])
            # A request refused at intake never ran and was given no retries: corrected, it
            # gets the intent's budget like any new job.
            refused = full["executed_at"] is None and not full["max_retries"]
            found = jobstore.requeue(
                conn, full["id"], by=by, params=params, replace_params=params is not None,
                max_retries=intent.effective_max_retries if intent and refused else None,
                approval_seconds=settings.approval_expires_seconds)
            if found is None:
                continue
            was, status, traceparent = found
            done.append((full["id"], was, status))
            _traced("requeue", full["id"], traceparent, {
                "jobq.requeued_by": by, "jobq.was": was, "jobq.status": status,
                "jobq.params_corrected": params is not None})
    # A job requeued from cancelled that the list above did not know as such.
    known = {j["id"] for j in jobs if j.get("status") == "cancelled"}
    forget_revoked(job_id for job_id, was, _ in done if was == "cancelled" and job_id not in known)
    return done


def params_not_kept(job: dict[str, Any]) -> str:
    """What a retry of a job whose parameters were not kept is told, before the way to give
    new ones that the caller's interface has: what was refused, and that the job cannot run."""
    reason = job.get("error_message")
    return (f"job {job['id']} was refused and its parameters were not kept"
            + (f" ({reason})" if reason else "")
            + ": it runs only on new ones, never on the intent's defaults")


def _traced(action: str, job_id: str, traceparent: str | None,
            attributes: dict[str, Any]) -> None:
    """A person's action on a job, as a span of the job's trace (its next attempt joins that
    trace too), linked to the request that did it when that one is traced."""
    tracing.start_span(action, parent=traceparent, job_id=job_id,
                       links=(tracing.current_traceparent(),),
                       attributes={"jobq.job_id": job_id, **attributes}).end()


def _load(conn, job_id: str) -> dict[str, Any] | None:
    found = reads.find_jobs_by_prefix(conn, job_id, job_id)
    return found[0] if found else None
