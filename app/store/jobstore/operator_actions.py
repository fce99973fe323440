"""What operators (and academies through the API) do to a job: cancel it, put a finished one back
to pending (on corrected parameters, perhaps), and refuse every pending job of a tenant being
deleted."""

from __future__ import annotations

from typing import Any

from sqlalchemy import bindparam, text

from app.store.jobstore.binds import JSON

#: Cancel a job that has not finished; returns its status before.
CANCEL = text(
    """
    WITH before AS (
        SELECT id, status, coalesce(retry_count, 0) + 1 AS attempt
          FROM job_executions
         WHERE id = CAST(:id AS uuid) AND status IN ('pending', 'processing', 'awaiting_approval')
           FOR UPDATE
    ), cancelled AS (
        UPDATE job_executions j
           SET status = 'cancelled', completed_at = now(), error_message = :reason,
               lease_owner = NULL, lease_expires_at = NULL, updated_at = now()
          FROM before WHERE j.id = before.id
        RETURNING j.id, before.status AS was, before.attempt
    ), event AS (
        INSERT INTO job_events (job_id, attempt, kind, error, detail)
        SELECT id, attempt, 'cancelled', :reason,
               jsonb_build_object('was', was, 'by', CAST(:by AS text))
          FROM cancelled
    )
    SELECT was FROM cancelled
    """
)


def cancel(conn, job_id: str, *, reason: str, by: str) -> str | None:
    """The status the job had, or None when it was not pending, processing or awaiting
    approval."""
    row = conn.execute(CANCEL, {"id": job_id, "reason": reason, "by": by}).first()
    return row[0] if row else None


#: Put a finished job back to pending as a fresh start, keeping its history; with ``:params``,
#: on corrected parameters (the event keeps the old and the new) and ``:max_retries``. It is due
#: from now (``run_at``): its wait for a worker starts here, not when it was first asked for. A job
#: that was asked for with an approval and never got one goes back to awaiting it (for
#: ``:approval_seconds``): a cancel and a retry must not run it unapproved. A job whose
#: parameters were not kept (``params_dropped``) goes back only with new ones: it must never
#: run on defaults its caller did not send.
REQUEUE = text(
    """
    WITH before AS (
        SELECT j.id, j.status, j.intent_params,
               EXISTS (SELECT 1 FROM job_events e
                        WHERE e.job_id = j.id AND e.kind = 'created'
                          AND e.detail ? 'awaiting_approval')
               AND NOT EXISTS (SELECT 1 FROM job_events e
                                WHERE e.job_id = j.id AND e.kind = 'approved') AS unapproved
          FROM job_executions j
         WHERE j.id = CAST(:id AS uuid) AND j.status IN ('failed', 'cancelled')
           AND (:replace OR NOT j.params_dropped)
           FOR UPDATE
    ), again AS (
        UPDATE job_executions j
           SET status = CASE WHEN before.unapproved THEN 'awaiting_approval' ELSE 'pending' END,
               approval_expires_at = CASE WHEN before.unapproved
                   THEN now() + make_interval(secs => :approval_seconds) END,
               retry_count = 0, error_message = NULL,
               completed_at = NULL, executed_at = NULL, result = NULL, progress = NULL,
               run_at = now(), published_at = NULL, updated_at = now(),
               intent_params = CASE WHEN :replace THEN :params ELSE j.intent_params END,
               params_dropped = j.params_dropped AND NOT :replace,
               max_retries = coalesce(:max_retries, j.max_retries)
          FROM before WHERE j.id = before.id
        RETURNING j.id, before.status AS was, before.intent_params AS old_params, j.status,
                  j.traceparent
    ), event AS (
        INSERT INTO job_events (job_id, attempt, kind, detail)
        SELECT id, 0, 'requeued',
               jsonb_build_object('was', was, 'by', CAST(:by AS text))
               || CASE WHEN status = 'awaiting_approval'
                       THEN '{"awaiting_approval": true}'::jsonb ELSE '{}'::jsonb END
               || CASE WHEN :replace
                       THEN jsonb_build_object('params', jsonb_build_object(
                                'old', old_params, 'new', CAST(:params AS jsonb)))
                       ELSE '{}'::jsonb END
          FROM again
    )
    SELECT was, status, traceparent FROM again
    """
).bindparams(bindparam("params", type_=JSON))


def requeue(conn, job_id: str, *, by: str, params: Any = None, replace_params: bool = False,
            max_retries: int | None = None, approval_seconds: float = 259200.0
            ) -> tuple[str, str, str | None] | None:
    """``(the status it had, the status it has now, its traceparent)``: pending, or
    awaiting_approval for a job never approved. None when it was not failed or cancelled, or when its parameters were not
    kept and no new ones came (``replace_params``)."""
    row = conn.execute(REQUEUE, {"id": job_id, "by": by, "params": params,
                                 "replace": replace_params, "max_retries": max_retries,
                                 "approval_seconds": approval_seconds}).first()
    return (row[0], row[1], row[2]) if row else None


#: Every pending (or awaiting approval) job of a tenant being deleted: failed with the reason, naming who deleted it.
REFUSE_TENANT_PENDING = text(
    """
    WITH refused AS (
        UPDATE job_executions
           SET status = 'failed', completed_at = now(), error_message = :error,
               updated_at = now()
         WHERE tenant_id = CAST(:tenant_id AS uuid)
           AND status IN ('pending', 'awaiting_approval')
        RETURNING id, coalesce(retry_count, 0) AS retries
    ), event AS (
        INSERT INTO job_events (job_id, attempt, kind, error, detail)
        SELECT id, retries, 'refused', :error, jsonb_build_object('by', CAST(:by AS text))
          FROM refused
    )
    SELECT count(*) FROM refused
    """
)


def refuse_tenant_pending(conn, tenant_id: str, *, error: str, by: str) -> int:
    """Fail every pending job of ``tenant_id``; how many there were."""
    return conn.execute(REFUSE_TENANT_PENDING,
                        {"tenant_id": tenant_id, "error": error, "by": by}).scalar_one()
