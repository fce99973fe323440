"""Send a job's messages once, however often the job runs.

Every message is first written ``pending`` under the unique (job_id, recipient, channel), then
handed to its transport, then marked ``sent`` with the provider's message id. These writes go
through :meth:`~app.run.context.JobContext.journal`, committed at once, not with the job: a message
that went out stays recorded even when the run fails later, so the retry (or a rerun of the
whole job) skips it. A message is sent again only if the run died between handing it over and
recording it; its ``Idempotency-Key`` / ``Message-ID`` (the notification id) lets the other side
drop that duplicate.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import text

from app.handler_api import JobContext, PermanentError, TransientError
from handlers.notify.channels import Message, Transports
from handlers.notify.templates import Rendered
from handlers.settings import business

MAX_ERROR = 500


@dataclass(frozen=True)
class Outgoing:
    """One message a handler wants sent."""

    #: Who, stably across reruns: a guardian id, or ``guardian:student`` for a per-student notice.
    recipient: str
    #: kakao, sms, email or record.
    channel: str
    address: str | None
    rendered: Rendered
    guardian_id: str | None = None
    student_id: str | None = None
    broadcast_id: str | None = None


@dataclass
class SendSummary:
    sent: int = 0
    already_sent: int = 0
    failed: int = 0
    errors: list[str] = field(default_factory=list)
    #: (recipient, channel) of messages left pending because their ``send_by`` had passed.
    unsent: list[tuple[str, str]] = field(default_factory=list)
    #: Messages not tried at all: the caller's time was up (they go out in a next run).
    left: int = 0

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"sent": self.sent, "already_sent": self.already_sent,
                               "failed": self.failed}
        if self.errors:
            out["errors"] = self.errors[:5]
        return out


_WRITE_PENDING = text(
    """
    INSERT INTO notifications (tenant_id, job_id, recipient, channel, transport, guardian_id,
                               student_id, broadcast_id, address, template, subject, body)
    SELECT CAST(:tenant_id AS uuid), CAST(:job_id AS uuid), r.recipient, r.channel,
           r.transport, r.guardian_id, r.student_id, r.broadcast_id, r.address, r.template,
           r.subject, r.body
      FROM jsonb_to_recordset(CAST(:rows AS jsonb)) AS r(
           recipient text, channel text, transport text, guardian_id uuid, student_id uuid,
           broadcast_id uuid, address text, template text, subject text, body text)
    ON CONFLICT (job_id, recipient, channel) DO NOTHING
    """
)

_ROWS_OF_JOB = text(
    """
    SELECT id::text, recipient, channel, transport, status, address, subject, body
      FROM notifications
     WHERE job_id = CAST(:job_id AS uuid) AND tenant_id = CAST(:tenant_id AS uuid)
       AND recipient = ANY(:recipients)
    """
)

_ATTEMPT = text(
    "UPDATE notifications SET attempts = attempts + 1, updated_at = now() "
    "WHERE id = CAST(:id AS uuid)"
)

_SENT = text(
    """
    UPDATE notifications
       SET status = 'sent', provider_message_id = :provider_id, sent_at = now(),
           last_error = NULL, updated_at = now()
     WHERE id = CAST(:id AS uuid)
    """
)

#: The record transport's send is the row itself: one statement marks a whole batch sent.
_RECORDED = text(
    """
    UPDATE notifications
       SET status = 'sent', attempts = attempts + 1, provider_message_id = 'record:' || id,
           sent_at = now(), last_error = NULL, updated_at = now()
     WHERE id = ANY(CAST(:ids AS uuid[]))
    """
)

_FAILED = text(
    """
    UPDATE notifications
       SET status = CASE WHEN :final THEN 'failed' ELSE status END, last_error = :error,
           updated_at = now()
     WHERE id = CAST(:id AS uuid)
    """
)


def send_for_job(ctx: JobContext, outgoing: Sequence[Outgoing], *,
                 transports: Transports | None = None,
                 fail_if_nothing_delivered: bool = True,
                 send_by: float | None = None) -> SendSummary:
    """Send ``outgoing`` for ``ctx``'s job, skipping what an earlier run already sent.

    A transient failure stops the run (the retry continues where it stopped); a permanent one
    marks that message ``failed`` and goes on. When nothing was delivered and something failed
    permanently, raises :class:`PermanentError` with the first reason, so a single notice to a
    bad number fails its job with the gateway's words. Messages still to go when
    ``time.monotonic()`` reaches ``send_by`` (the end of a channel grant) stay pending and are
    listed in the summary's ``unsent``, for the caller's next grant.
    """
    summary = SendSummary()
    if not outgoing:
        return summary
    transports = transports or Transports(business)
    rows = [_row(o, transports.route(o.channel)) for o in outgoing]
    with ctx.journal() as conn:
        conn.execute(_WRITE_PENDING, {"tenant_id": ctx.tenant_id, "job_id": ctx.job_id,
                                      "rows": json.dumps(rows, ensure_ascii=False)})
        stored = conn.execute(_ROWS_OF_JOB, {
            "tenant_id": ctx.tenant_id, "job_id": ctx.job_id,
            "recipients": sorted({o.recipient for o in outgoing}),
        }).all()
    wanted = {(o.recipient, o.channel) for o in outgoing}
    todo = []
    for row in stored:
        if (row.recipient, row.channel) not in wanted:
            continue
        if row.status == "sent":
            summary.already_sent += 1
        else:
            todo.append(row)
    total = len(todo)
    if send_by is not None and time.monotonic() >= send_by:
        summary.unsent.extend((r.recipient, r.channel) for r in todo)
        return summary
    recorded = [r.id for r in todo if r.transport == "record"]
    if recorded:
        with ctx.journal() as conn:
            conn.execute(_RECORDED, {"ids": recorded})
        summary.sent += len(recorded)
        ctx.progress(len(recorded), total, "recorded")
    try:
        for done, row in enumerate((r for r in todo if r.transport != "record"),
                                   len(recorded) + 1):
            if send_by is not None and time.monotonic() >= send_by:
                summary.unsent.append((row.recipient, row.channel))
                continue
            _send_one(ctx, transports, row, summary)
            ctx.progress(done, total, "sending")
    finally:
        transports.close()
    if fail_if_nothing_delivered and summary.failed and not (summary.sent or summary.already_sent):
        raise PermanentError(summary.errors[0])
    ctx.log.info("notifications: %s", summary.as_dict())
    return summary


def _send_one(ctx: JobContext, transports: Transports, row: Any, summary: SendSummary) -> None:
    message = Message(reference=row.id, channel=row.channel, address=row.address,
                      subject=row.subject, body=row.body)
    with ctx.journal() as conn:
        conn.execute(_ATTEMPT, {"id": row.id})
    try:
        provider_id = transports.get(row.transport).send(message)
    except TransientError as exc:
        _record_failure(ctx, row.id, exc, final=False)
        raise
    except Exception as exc:
        _record_failure(ctx, row.id, exc, final=True)
        if not isinstance(exc, PermanentError):
            raise  # a bug, not a bad address: fail the job visibly
        summary.failed += 1
        summary.errors.append(str(exc))
        return
    with ctx.journal() as conn:
        conn.execute(_SENT, {"id": row.id, "provider_id": provider_id})
    summary.sent += 1


def _record_failure(ctx: JobContext, notification_id: str, exc: BaseException, *,
                    final: bool) -> None:
    error = (f"{type(exc).__name__}: {exc}")[:MAX_ERROR]
    with ctx.journal() as conn:
        conn.execute(_FAILED, {"id": notification_id, "error": error, "final": final})


def _row(o: Outgoing, transport: str) -> dict[str, Any]:
    return {
        "recipient": o.recipient, "channel": o.channel, "transport": transport,
        "guardian_id": o.guardian_id, "student_id": o.student_id,
        "broadcast_id": o.broadcast_id, "address": o.address, "template": o.rendered.template,
        "subject": o.rendered.subject, "body": o.rendered.body,
    }
