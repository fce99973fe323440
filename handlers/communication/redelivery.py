"""Sending again the messages that did not go out (refused, or left pending by a job that gave
up), each in place in its own notification row, to the guardian's current address."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import text

from app.handler_api import JobContext, PermanentError, TransientError
from handlers import periods
from handlers.communication.params import RetryFailedDeliveriesParams
from handlers.communication.ratelimit import acquire, bucket_for
from handlers.notify.channels import Message, Transports
from handlers.settings import business

MAX_ERROR = 500

#: Messages worth another try: refused (``failed``), or left ``pending`` by a job that gave up
#: (failed, or since deleted by retention). Never those of a job still running or about to
#: retry (its own run sends them), nor the unsent rest of a cancelled one: whoever cancelled a
#: broadcast did not want it sent.
_CANDIDATES = text(
    """
    SELECT n.id::text
      FROM notifications n
     WHERE n.tenant_id = CAST(:tenant_id AS uuid) AND n.created_at >= :since
       AND n.attempts < :max_attempts
       AND (CAST(:job_id AS uuid) IS NULL OR n.job_id = CAST(:job_id AS uuid))
       AND NOT EXISTS (SELECT 1 FROM job_executions j
                        WHERE j.id = n.job_id AND j.status IN ('pending', 'processing'))
       AND (n.status = 'failed'
            OR (n.status = 'pending' AND NOT EXISTS (
                    SELECT 1 FROM job_executions j
                     WHERE j.id = n.job_id AND j.status <> 'failed')))
     ORDER BY n.created_at, n.id
     LIMIT :limit
    """
)

#: The message, locked for this retry, with the guardian's address on its channel today.
_TAKE = text(
    """
    SELECT n.id::text, n.channel, n.address, n.subject, n.body,
           CASE n.channel WHEN 'kakao' THEN coalesce(g.kakao_id, g.phone)
                          WHEN 'sms' THEN g.phone
                          WHEN 'email' THEN g.email END AS current_address
      FROM notifications n
      LEFT JOIN guardians g ON g.id = n.guardian_id AND g.tenant_id = n.tenant_id
     WHERE n.id = CAST(:id AS uuid) AND n.status <> 'sent'
       FOR UPDATE OF n SKIP LOCKED
    """
)

_ATTEMPT = text(
    """
    UPDATE notifications
       SET attempts = attempts + 1, address = :address, transport = :transport, updated_at = now()
     WHERE id = CAST(:id AS uuid)
    """
)

_SENT = text(
    """
    UPDATE notifications
       SET status = 'sent', provider_message_id = :provider_id, sent_at = now(),
           last_error = NULL, updated_at = now()
     WHERE id = CAST(:id AS uuid)
    """
)

_FAILED = text(
    """
    UPDATE notifications SET status = :status, last_error = :error, updated_at = now()
     WHERE id = CAST(:id AS uuid)
    """
)


def retry_failed_deliveries(ctx: JobContext,
                            params: RetryFailedDeliveriesParams) -> dict[str, Any]:
    """Send failed (and abandoned) messages again, each in its own row, to today's address.

    The usual fix is a corrected phone number or e-mail, hence today's address. One message at
    a time: its row is locked (``SKIP LOCKED``: two retry jobs never take the same one), sent
    and marked in one short transaction of its own, so what went out stays recorded whatever
    happens to the rest of the run.

    A transient failure (the gateway is down) stops the run, to be retried by the engine; the
    messages sent so far stay sent. A permanent one marks that message failed and goes on.
    """
    since = periods.job_time(ctx) - dt.timedelta(hours=params.since_hours)
    with ctx.journal() as conn:
        ids = [r[0] for r in conn.execute(_CANDIDATES, {
            "tenant_id": ctx.tenant_id, "since": since, "max_attempts": params.max_attempts,
            "job_id": str(params.job_id) if params.job_id else None, "limit": params.limit})]
    transports = Transports(business)
    counts = {"candidates": len(ids), "sent": 0, "failed": 0, "skipped": 0}
    errors: list[str] = []
    try:
        for done, notification_id in enumerate(ids, 1):
            outcome, error = _retry_one(ctx, transports, notification_id)
            counts[outcome] += 1
            if error and len(errors) < 5:
                errors.append(error)
            ctx.progress(done, len(ids), "retrying")
    finally:
        transports.close()
    ctx.log.info("redelivery: %s", counts)
    return {**counts, **({"errors": errors} if errors else {})}


def _retry_one(ctx: JobContext, transports: Transports,
               notification_id: str) -> tuple[str, str | None]:
    """``("sent" | "failed" | "skipped", error)`` for one message; raises a transient error
    after recording it."""
    transient: TransientError | None = None
    with ctx.journal() as conn:
        row = conn.execute(_TAKE, {"id": notification_id}).first()
        if row is None:  # sent meanwhile, or another retry has it
            return "skipped", None
        address = row.current_address or row.address
        transport = transports.route(row.channel)
        conn.execute(_ATTEMPT, {"id": row.id, "address": address, "transport": transport})
        acquire(ctx, bucket_for(row.channel, transport), 1)
        message = Message(reference=row.id, channel=row.channel, address=address,
                          subject=row.subject, body=row.body)
        try:
            provider_id = transports.get(transport).send(message)
        except TransientError as exc:
            # Recorded with the attempt (this transaction commits), raised once it has.
            conn.execute(_FAILED, {"id": row.id, "status": "pending", "error": _error(exc)})
            transient = exc
        except PermanentError as exc:
            conn.execute(_FAILED, {"id": row.id, "status": "failed", "error": _error(exc)})
            return "failed", str(exc)
        else:
            conn.execute(_SENT, {"id": row.id, "provider_id": provider_id})
            return "sent", None
    raise transient


def _error(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"[:MAX_ERROR]
