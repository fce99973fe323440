"""Approvals: a job that waits for a person is approved (pending, handed to the broker when
due), rejected (cancelled), or expires (cancelled) when nobody decided in time."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import text

#: A job awaiting approval becomes pending, approved by ``:by``, and due no earlier than now
#: (its wait for a worker starts at the approval, not while a person decided); stamped as handed
#: to the broker when it is due within ``:eta_max`` seconds (the caller publishes it after
#: commit; a later one waits for the sweep).
APPROVE = text(
    """
    WITH approved AS (
        UPDATE job_executions j
           SET status = 'pending', approval_expires_at = NULL, updated_at = now(),
               run_at = greatest(j.run_at, now()),
               published_at = CASE WHEN j.run_at IS NULL
                                     OR j.run_at <= now() + make_interval(secs => :eta_max)
                                   THEN now() END
         WHERE j.id = CAST(:id AS uuid) AND j.status = 'awaiting_approval'
        RETURNING j.id, j.tenant_id::text AS tenant_id, j.intent_key, j.intent_params, j.queue,
                  j.published_at IS NOT NULL AS publish,
                  greatest(extract(epoch FROM j.run_at - now()), 0) AS countdown, j.traceparent
    ), event AS (
        INSERT INTO job_events (job_id, attempt, kind, detail)
        SELECT id, 0, 'approved',
               jsonb_strip_nulls(jsonb_build_object('by', CAST(:by AS text),
                                                    'note', CAST(:note AS text)))
          FROM approved
    )
    SELECT id::text, tenant_id, intent_key, intent_params, queue, publish,
           CAST(countdown AS float8), traceparent FROM approved
    """
)


@dataclass(frozen=True)
class Approved:
    id: str
    tenant_id: str
    intent_key: str
    intent_params: Any
    queue: str | None
    #: Stamped as handed to the broker: the caller publishes it after commit.
    publish: bool
    countdown: float | None
    #: The trace the job was asked for in (app.core.tracing), where the approval shows.
    traceparent: str | None = None


def approve(conn, job_id: str, *, by: str, note: str | None = None,
            eta_max: float = 5.0) -> Approved | None:
    """Approve a job awaiting approval; None when it was not awaiting one."""
    row = conn.execute(APPROVE, {"id": job_id, "by": by, "note": note,
                                 "eta_max": eta_max}).first()
    return Approved(*row) if row else None


#: A job awaiting approval is rejected: cancelled, with who rejected it and why.
REJECT = text(
    """
    WITH rejected AS (
        UPDATE job_executions j
           SET status = 'cancelled', completed_at = now(), error_message = :reason,
               approval_expires_at = NULL, updated_at = now()
         WHERE j.id = CAST(:id AS uuid) AND j.status = 'awaiting_approval'
        RETURNING j.id
    ), event AS (
        INSERT INTO job_events (job_id, attempt, kind, error, detail)
        SELECT id, 0, 'rejected', :reason, jsonb_build_object('by', CAST(:by AS text))
          FROM rejected
    )
    SELECT count(*) FROM rejected
    """
)


def reject(conn, job_id: str, *, by: str, reason: str) -> bool:
    """Reject a job awaiting approval; False when it was not awaiting one."""
    return bool(conn.execute(REJECT, {"id": job_id, "by": by, "reason": reason}).scalar_one())


#: Jobs whose approval did not come in time: cancelled as expired, a batch at a time.
EXPIRE_APPROVALS = text(
    """
    WITH doomed AS (
        SELECT id FROM job_executions
         WHERE status = 'awaiting_approval' AND approval_expires_at <= now()
         ORDER BY approval_expires_at
         LIMIT :batch
           FOR UPDATE SKIP LOCKED
    ), expired AS (
        UPDATE job_executions j
           SET status = 'cancelled', completed_at = now(), updated_at = now(),
               error_message = 'approval expired: nobody approved it by '
                               || to_char(j.approval_expires_at AT TIME ZONE 'UTC',
                                          'YYYY-MM-DD HH24:MI:SS') || ' UTC'
          FROM doomed WHERE j.id = doomed.id
        RETURNING j.id, j.error_message
    ), event AS (
        INSERT INTO job_events (job_id, attempt, kind, error, detail)
        SELECT id, 0, 'expired', error_message, jsonb_build_object('by', 'jobq:expiry')
          FROM expired
    )
    SELECT id::text FROM expired
    """
)


def expire_approvals(conn, *, batch: int) -> list[str]:
    """Cancel up to ``batch`` jobs whose approval expired; their ids."""
    return [r[0] for r in conn.execute(EXPIRE_APPROVALS, {"batch": batch})]
