"""Lost runs: a run whose owner is gone (its process died, or stopped renewing its lease) goes
back to pending while it has retries left, else fails; either way with a ``lost`` event. A job
that goes back keeps its place (its ``run_at``): it had its turn, and the feeder hands it out
first of its academy's jobs, not behind the backlog that arrived while it ran."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlalchemy import text

from app.store import liveness

#: Whether a run's owner is gone (its run is lost). An owner that holds a liveness lock
#: (app.store.liveness) is dead the moment its lock is free, and alive while it holds it, even
#: with its lease lapsed (a handler blocked in C code stops the renewing thread too) until the
#: lease is ``:wedged`` seconds overdue, longer than any run may last. For other owners the lease decides: their
#: process stopped renewing it, so it is gone. A processing row without a lease (written so
#: from outside, e.g. left over from the original cron worker) was never leased by the engine
#: and is lost once it is a lease period old.
#: Right after a database restart nobody could renew a lease nor hold a lock: wait one lease
#: period first.
OWNER_GONE = (
    f"CASE WHEN {liveness.has_token('lease_owner')} "
    f"THEN NOT {liveness.owner_alive('lease_owner')} "
    "OR lease_expires_at < now() - make_interval(secs => :wedged) "
    "ELSE lease_expires_at < now() "
    "OR (lease_expires_at IS NULL "
    "AND coalesce(executed_at, updated_at) < now() - make_interval(secs => :lease)) END "
    "AND pg_postmaster_start_time() < now() - make_interval(secs => :lease)"
)

_RELEASE_LOST = """
    WITH lost AS (
        SELECT id, coalesce(retry_count, 0) AS retries,
               coalesce(max_retries, :default_max_retries) AS max_retries,
               worker, lease_owner, lease_expires_at
          FROM job_executions
         WHERE status = 'processing' AND {where}
         ORDER BY lease_expires_at
         LIMIT :batch
           FOR UPDATE SKIP LOCKED
    ), released AS (
        UPDATE job_executions j
           SET status = CASE WHEN lost.retries < lost.max_retries THEN 'pending' ELSE 'failed' END,
               retry_count = CASE WHEN lost.retries < lost.max_retries
                                  THEN lost.retries + 1 ELSE j.retry_count END,
               error_message = :error || ' (' || coalesce(lost.worker, 'unknown worker') || ', '
                               || coalesce(lost.lease_owner, '?') || ')',
               completed_at = CASE WHEN lost.retries < lost.max_retries THEN NULL ELSE now() END,
               published_at = NULL, lease_owner = NULL, lease_expires_at = NULL,
               updated_at = now()
          FROM lost
         WHERE j.id = lost.id
        RETURNING j.id, j.status, lost.retries + 1 AS attempt, lost.worker, j.error_message,
                  j.intent_key, j.tenant_id, j.traceparent, j.executed_at
    ), events AS (
        INSERT INTO job_events (job_id, attempt, kind, worker, error)
        SELECT id, attempt, 'lost', worker, error_message FROM released
        UNION ALL
        SELECT id, attempt, 'failed', worker, error_message FROM released WHERE status = 'failed'
    )
    SELECT id::text, status, attempt, worker, intent_key, tenant_id::text, traceparent,
           executed_at, error_message FROM released
"""

#: Runs whose owner is gone (see :data:`OWNER_GONE`).
RELEASE_EXPIRED = text(_RELEASE_LOST.format(where=f"({OWNER_GONE})"))
#: One run whose lease holder is known to be dead (its pid is gone from this host).
RELEASE_OWNED = text(
    _RELEASE_LOST.format(where="id = CAST(:id AS uuid) AND lease_owner = :owner")
)

LOST_ERROR = "worker lost: the process running this attempt died or stopped renewing its lease"


@dataclass(frozen=True)
class Released:
    id: str
    status: str  # pending (will run again) or failed
    attempt: int
    worker: str | None
    #: What the lost attempt's span needs (app.run.spans.lost): its own process never ended it.
    intent_key: str = ""
    tenant_id: str = ""
    traceparent: str | None = None
    started_at: dt.datetime | None = None
    error: str | None = None


def release_expired(conn, *, batch: int, default_max_retries: int,
                    lease: float, wedged: float) -> list[Released]:
    rows = conn.execute(
        RELEASE_EXPIRED,
        {"batch": batch, "error": LOST_ERROR, "default_max_retries": default_max_retries,
         "lease": lease, "wedged": wedged},
    )
    return [Released(*r) for r in rows]


def release_owned(conn, job_id: str, *, owner: str, default_max_retries: int) -> Released | None:
    row = conn.execute(
        RELEASE_OWNED,
        {"id": job_id, "owner": owner, "batch": 1, "error": LOST_ERROR,
         "default_max_retries": default_max_retries},
    ).first()
    return Released(*row) if row else None
