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

import contextvars
import json
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
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

#: Before a batch is handed over: an attempt counts from the moment the message may have left.
_ATTEMPTS = text(
    "UPDATE notifications SET attempts = attempts + 1, updated_at = now() "
    "WHERE id = ANY(CAST(:ids AS uuid[]))"
)

#: After it, each message's outcome in one statement: ``sent`` (with the provider's id),
#: ``failed`` (for good), ``retry`` (a transient failure: pending, with the reason) or
#: ``untried`` (its time was up, or the batch stopped first: its attempt is taken back).
_OUTCOMES = text(
    """
    UPDATE notifications n
       SET status = CASE r.outcome WHEN 'sent' THEN 'sent' WHEN 'failed' THEN 'failed'
                                   ELSE n.status END,
           provider_message_id = CASE WHEN r.outcome = 'sent' THEN r.provider_id
                                      ELSE n.provider_message_id END,
           sent_at = CASE WHEN r.outcome = 'sent' THEN now() ELSE n.sent_at END,
           last_error = CASE r.outcome WHEN 'sent' THEN NULL WHEN 'untried' THEN n.last_error
                                       ELSE r.error END,
           attempts = n.attempts - CASE WHEN r.outcome = 'untried' THEN 1 ELSE 0 END,
           updated_at = now()
      FROM jsonb_to_recordset(CAST(:rows AS jsonb))
           AS r(id uuid, outcome text, provider_id text, error text)
     WHERE n.id = r.id
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
    outside = [r for r in todo if r.transport != "record"]
    try:
        _hand_over(ctx, transports, outside, summary, send_by)
    finally:
        transports.close()
    if outside:
        ctx.progress(total - len(summary.unsent), total, "sending")
    if fail_if_nothing_delivered and summary.failed and not (summary.sent or summary.already_sent):
        raise PermanentError(summary.errors[0])
    ctx.log.info("notifications: %s", summary.as_dict())
    return summary


def _hand_over(ctx: JobContext, transports: Transports, rows: Sequence[Any],
               summary: SendSummary, send_by: float | None) -> None:
    """Hand ``rows`` to their transports, up to each transport's concurrency at once (a
    webhook POST waits for its answer: one at a time, a run would send one message per round
    trip to the gateway). The database sees two writes for the batch, not two per message: the
    attempts before, every outcome after (also when the run is stopped midway, so what went
    out stays recorded).

    A permanent failure marks that message failed and the others go on. A transient one (the
    gateway is down, or answered 429) or a bug stops the batch: nothing new is handed over,
    what is in flight finishes, the outcomes are written, then the first such error is raised
    (a retry continues where this stopped). Messages not handed over by ``send_by`` stay
    pending, listed in the summary's ``unsent``.
    """
    if not rows:
        return
    with ctx.journal() as conn:
        conn.execute(_ATTEMPTS, {"ids": [r.id for r in rows]})
    stop = threading.Event()
    # Per row: ("sent", provider id) | ("failed" | "retry", the error) | ("untried", None).
    outcomes: list[tuple[str, Any]] = [("untried", None)] * len(rows)

    def hand(i: int, row: Any) -> None:
        if stop.is_set() or (send_by is not None and time.monotonic() >= send_by):
            return
        message = Message(reference=row.id, channel=row.channel, address=row.address,
                          subject=row.subject, body=row.body)
        try:
            outcomes[i] = ("sent", transports.get(row.transport).send(message))
        except PermanentError as exc:
            outcomes[i] = ("failed", exc)
        except Exception as exc:  # transient: stops the batch; a bug: fails the job visibly
            outcomes[i] = ("retry" if isinstance(exc, TransientError) else "failed", exc)
            stop.set()

    by_transport: dict[str, list[int]] = {}
    for i, row in enumerate(rows):
        by_transport.setdefault(row.transport, []).append(i)
    try:
        for name, indexes in by_transport.items():
            transports.get(name)  # built here, not by several threads at once
            workers = min(transports.concurrency(name), len(indexes))
            if workers <= 1:
                for i in indexes:
                    hand(i, rows[i])
                continue
            with ThreadPoolExecutor(max_workers=workers,
                                    thread_name_prefix=f"send-{name}") as pool:
                try:
                    # Each in a copy of the run's context: its POST's span is the run's child.
                    for future in [pool.submit(contextvars.copy_context().run, hand, i, rows[i])
                                   for i in indexes]:
                        future.result()
                except BaseException:
                    stop.set()  # leaving by an exception (a time limit): start nothing new
                    raise
    finally:
        with ctx.journal() as conn:
            conn.execute(_OUTCOMES, {"rows": json.dumps([
                {"id": row.id, "outcome": outcome,
                 "provider_id": value if outcome == "sent" else None,
                 "error": _error(value) if outcome in ("failed", "retry") else None}
                for row, (outcome, value) in zip(rows, outcomes, strict=True)])})
    stopped_by: BaseException | None = None
    for row, (outcome, value) in zip(rows, outcomes, strict=True):
        if outcome == "sent":
            summary.sent += 1
        elif outcome == "untried":
            summary.unsent.append((row.recipient, row.channel))
        elif isinstance(value, PermanentError):
            summary.failed += 1
            summary.errors.append(str(value))
        elif stopped_by is None:
            stopped_by = value
    if stopped_by is not None:
        raise stopped_by


def _error(exc: BaseException) -> str:
    return (f"{type(exc).__name__}: {exc}")[:MAX_ERROR]


def _row(o: Outgoing, transport: str) -> dict[str, Any]:
    return {
        "recipient": o.recipient, "channel": o.channel, "transport": transport,
        "guardian_id": o.guardian_id, "student_id": o.student_id,
        "broadcast_id": o.broadcast_id, "address": o.address, "template": o.rendered.template,
        "subject": o.rendered.subject, "body": o.rendered.body,
    }
