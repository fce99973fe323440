"""Broadcasts: one message to every guardian of the academy or of a class, fanned out into
chunk jobs on the bulk queue; the parent job reports the broadcast's progress and completes
when the last chunk is sent."""

from __future__ import annotations

import dataclasses
import time
import uuid
from collections.abc import Callable
from typing import Any

from sqlalchemy import and_, func, select, text
from sqlalchemy.dialects.postgresql import insert

from app.handler_api import JobContext, PermanentError, WaitingError
from handlers import periods
from handlers.communication.params import BroadcastChunkParams, BroadcastParams
from handlers.communication.ratelimit import chunk_size_for, send_at_rate
from handlers.models import (
    AcademyClass,
    Broadcast,
    BroadcastChunk,
    Enrolment,
    Guardian,
    Student,
    StudentGuardian,
)
from handlers.notify.recipients import academy_name, channel_and_address
from handlers.notify.sending import Outgoing
from handlers.notify.templates import render

CHUNK_INTENT = "communication.exec.broadcast_chunk"
#: How long the parent waits between looks at the chunks other workers hold (no worker held).
LOOK_AGAIN_SECONDS = 1.0
#: The parent's wait, in its history once per attempt.
WAITING = "waits for its chunks to be sent"
#: A chunk is about this many seconds of the academy's share of the channel, so no chunk holds
#: a worker long and a new academy's first chunk finds one free within about that time.
CHUNK_SECONDS = 1.0
#: A chunk run that used its turn, in its history once per attempt.
IN_TURNS = "sends its chunk in turns with the other academies' jobs"
#: How long a chunk run sends before it lets its worker go to an academy not yet sending
#: that waits on the queue (it goes on in a next run, in the queue's fair order).
TURN_SECONDS = 0.4
#: The smallest chunk (a chunk job costs a claim and a completion).
MIN_CHUNK = 10

_PROGRESS = text(
    """
    SELECT count(*) FROM notifications
     WHERE job_id = CAST(:job_id AS uuid) AND tenant_id = CAST(:tenant_id AS uuid)
       AND status <> 'pending'
    """
)


def broadcast(ctx: JobContext, params: BroadcastParams) -> dict[str, Any]:
    """Send the message to every guardian in scope, once, through parallel chunk jobs.

    The parent fixes the recipients (a snapshot of guardian ids cut into chunks about a second
    of the academy's share of the channel long) and commits the ``broadcasts`` row, a
    ``broadcast_chunks`` row per chunk and a chunk job per chunk together (a checkpoint) before
    any chunk runs. Each run of the parent then sends at most one unclaimed chunk itself
    (a one-chunk broadcast goes out in its first run), writes the progress on its own row
    (``jobq job <parent>`` shows the percentage) and, while chunks are still to go, waits
    without holding a worker: it looks again a moment later, as a new run. A chunk is sent by
    whichever run holds its row lock, so none waits for a worker that is not coming.

    Every message is written under the parent's job id, whichever run sends it, so the
    notifications' unique (job, recipient, channel) holds across chunk jobs, takeovers and
    reruns: a guardian gets a broadcast once.
    """
    found = ctx.session.scalar(select(Broadcast).where(
        Broadcast.tenant_id == uuid.UUID(ctx.tenant_id), Broadcast.job_id == uuid.UUID(ctx.job_id)))
    state = ctx.resume_from if isinstance(ctx.resume_from, dict) else {}
    waited = found is not None and state.get("waiting") is True
    resumed = bool(state.get("resumed")) if waited else found is not None
    row = found or _fan_out(ctx, params)
    by_parent = int(state.get("by_parent", 0)) if waited else 0
    chunk = _claim(ctx, row.id)
    if chunk is not None:
        by_parent += 1
        _send_chunk(ctx, row, chunk, on_progress=lambda done, total: _report(ctx, row),
                    state={"broadcast_id": str(row.id), "waiting": True,
                           "by_parent": by_parent, "resumed": resumed})
    pending = ctx.session.scalar(select(func.count()).select_from(BroadcastChunk).where(
        BroadcastChunk.broadcast_id == row.id, BroadcastChunk.status == "pending"))
    _report(ctx, row)
    if pending:
        # Held by chunk jobs on other workers (one that dies lets go of its lock, and a next
        # look takes its chunk over), or waiting their turn: look again without a worker held.
        ctx.checkpoint({"broadcast_id": str(row.id), "waiting": True, "by_parent": by_parent,
                        "resumed": resumed})
        raise WaitingError(WAITING, retry_after=LOOK_AGAIN_SECONDS)
    totals = ctx.session.execute(
        select(func.coalesce(func.sum(BroadcastChunk.sent), 0),
               func.coalesce(func.sum(BroadcastChunk.already_sent), 0),
               func.coalesce(func.sum(BroadcastChunk.failed), 0))
        .where(BroadcastChunk.broadcast_id == row.id)).one()
    if row.status != "sent":
        row.status = "sent"
        row.finished_at = periods.now()
    _report(ctx, row, force=True)
    ctx.checkpoint({"broadcast_id": str(row.id)})
    return {"broadcast_id": str(row.id), "recipients": row.recipients_total,
            "chunks": row.chunks_total, "chunks_sent_by_parent": by_parent,
            "sent": int(totals[0]), "already_sent": int(totals[1]), "failed": int(totals[2]),
            "resumed": resumed}


def broadcast_chunk(ctx: JobContext, params: BroadcastChunkParams) -> dict[str, Any]:
    """Send one chunk of a broadcast, unless another run has sent it or is sending it."""
    row = ctx.session.scalar(select(Broadcast).where(
        Broadcast.tenant_id == uuid.UUID(ctx.tenant_id), Broadcast.id == params.broadcast_id))
    if row is None:
        raise PermanentError(f"no broadcast {params.broadcast_id} in this academy")
    parent_status = ctx.job_status(str(row.job_id))
    if parent_status == "cancelled":
        # Stopped by whoever cancelled the broadcast; a retry of the parent sends the rest.
        return {"broadcast_id": str(row.id), "chunk_no": params.chunk_no, "sent": 0,
                "taken_by": "nobody: the broadcast was cancelled"}
    chunk = _claim(ctx, row.id, params.chunk_no)
    if chunk is None:
        state = ctx.session.scalar(select(BroadcastChunk.status).where(
            BroadcastChunk.broadcast_id == row.id, BroadcastChunk.chunk_no == params.chunk_no))
        if state is None:
            raise PermanentError(f"broadcast {row.id} has no chunk {params.chunk_no}")
        # Done, or being sent by the parent right now: either way, not ours to send.
        return {"broadcast_id": str(row.id), "chunk_no": params.chunk_no, "sent": 0,
                "taken_by": "done" if state == "done" else "another run"}
    summary = _send_chunk(ctx, row, chunk,
                          on_progress=lambda done, total: ctx.progress(done, total, "sending"),
                          state={"broadcast_id": str(row.id), "chunk_no": params.chunk_no})
    return {"broadcast_id": str(row.id), "chunk_no": params.chunk_no, **summary}


# --- the parts --------------------------------------------------------------------------------


def _fan_out(ctx: JobContext, params: BroadcastParams) -> Broadcast:
    """Write the broadcast, its chunks and their jobs, and commit them together."""
    tenant = uuid.UUID(ctx.tenant_id)
    if params.class_id is not None:
        klass = ctx.session.scalar(select(AcademyClass).where(
            AcademyClass.tenant_id == tenant, AcademyClass.id == params.class_id))
        if klass is None:
            raise PermanentError(f"no class {params.class_id} in this academy")
    guardian_ids = _recipients(ctx, params.class_id)
    size = chunk_size_for(ctx, params.chunk_size, seconds=CHUNK_SECONDS, least=MIN_CHUNK)
    chunks = [guardian_ids[i:i + size] for i in range(0, len(guardian_ids), size)]
    row = Broadcast(tenant_id=tenant, job_id=uuid.UUID(ctx.job_id), class_id=params.class_id,
                    title=params.title, body=params.message, recipients_total=len(guardian_ids),
                    chunks_total=len(chunks), status="sending" if chunks else "sent",
                    finished_at=None if chunks else periods.now())
    ctx.session.add(row)
    ctx.session.flush()
    # The idempotency key makes a chunk job once per chunk, however often this runs.
    job_ids = ctx.submit_children([
        {"intent_key": CHUNK_INTENT, "intent_params": {"broadcast_id": str(row.id), "chunk_no": n},
         "idempotency_key": f"broadcast:{row.id}:{n}"}
        for n in range(len(chunks))
    ])
    if chunks:
        ctx.session.execute(insert(BroadcastChunk).values([
            {"broadcast_id": row.id, "chunk_no": n, "tenant_id": tenant, "guardian_ids": ids,
             "job_id": uuid.UUID(job_ids[n])}
            for n, ids in enumerate(chunks)
        ]).on_conflict_do_nothing())
    ctx.log.info("broadcast %s: %d guardians in %d chunks", row.id, len(guardian_ids),
                 len(chunks))
    # Commits the broadcast before any chunk job can look for it; their messages go out now.
    ctx.checkpoint({"broadcast_id": str(row.id)})
    return row


def _recipients(ctx: JobContext, class_id: uuid.UUID | None) -> list[uuid.UUID]:
    """Every guardian (primary or not) of the active students in scope, once, in id order."""
    tenant = uuid.UUID(ctx.tenant_id)
    query = (
        select(StudentGuardian.guardian_id)
        .join(Student, Student.id == StudentGuardian.student_id)
        .where(StudentGuardian.tenant_id == tenant, Student.status == "active")
        .distinct()
        .order_by(StudentGuardian.guardian_id)
    )
    if class_id is not None:
        query = query.join(Enrolment, and_(Enrolment.student_id == Student.id,
                                           Enrolment.class_id == class_id,
                                           Enrolment.status == "active"))
    return list(ctx.session.scalars(query))


def _claim(ctx: JobContext, broadcast_id: uuid.UUID,
           chunk_no: int | None = None) -> BroadcastChunk | None:
    """Lock a chunk still to send (this one, or the last free one); None if there is none.

    The parent takes chunks from the end so that it and the chunk jobs, which start from the
    front, rarely reach for the same one.
    """
    query = select(BroadcastChunk).where(BroadcastChunk.broadcast_id == broadcast_id,
                                         BroadcastChunk.status == "pending")
    if chunk_no is not None:
        query = query.where(BroadcastChunk.chunk_no == chunk_no)
    return ctx.session.scalar(query.order_by(BroadcastChunk.chunk_no.desc()).limit(1)
                              .with_for_update(skip_locked=True))


def _send_chunk(ctx: JobContext, row: Broadcast, chunk: BroadcastChunk,
                on_progress: Callable[[int, int], None], state: dict[str, Any]) -> dict[str, Any]:
    """Send the chunk; when an academy not yet sending waits on the queue, for at most
    :data:`TURN_SECONDS`, ``state`` then being the run's checkpoint (the rest goes out in its
    next run)."""
    tenant = uuid.UUID(ctx.tenant_id)
    guardians = ctx.session.scalars(select(Guardian).where(
        Guardian.tenant_id == tenant, Guardian.id.in_(chunk.guardian_ids))).all()
    rendered = render("communication.message", academy=academy_name(ctx.session, ctx.tenant_id),
                      title=row.title or "안내", text=row.body)
    outgoing = []
    for g in guardians:
        channel, address = channel_and_address(g)
        outgoing.append(Outgoing(recipient=str(g.id), channel=channel, address=address,
                                 rendered=rendered, guardian_id=str(g.id),
                                 broadcast_id=str(row.id)))
    as_parent = dataclasses.replace(ctx, job_id=str(row.job_id))
    summary = send_at_rate(as_parent, outgoing, on_progress=on_progress,
                           until=time.monotonic() + TURN_SECONDS,
                           turn_over=lambda channel: ctx.others_waiting(channel))
    before = chunk.sent or 0
    chunk.sent = before + summary.sent
    if summary.left:
        # Its turn is over: the rest goes out in a next run, behind the job that waited
        # meanwhile (another academy's broadcast), so no chunk holds a worker for long.
        ctx.checkpoint(state)
        raise WaitingError(IN_TURNS, retry_after=0.0)
    chunk.status = "done"
    chunk.sent_by_job_id = uuid.UUID(ctx.job_id)
    chunk.already_sent = max(0, summary.already_sent - before)
    chunk.failed = summary.failed
    chunk.finished_at = periods.now()
    # Guardians removed since the fan-out are not messaged; the count says so.
    return {**summary.as_dict(), "sent": chunk.sent, "already_sent": chunk.already_sent,
            "guardians_gone": len(chunk.guardian_ids) - len(guardians)}


def _report(ctx: JobContext, row: Broadcast, *, force: bool = False) -> None:
    """The broadcast's progress on the parent's row: messages handled of all recipients."""
    with ctx.journal() as conn:
        handled = conn.execute(_PROGRESS, {"job_id": str(row.job_id),
                                           "tenant_id": ctx.tenant_id}).scalar_one()
    ctx.progress(min(handled, row.recipients_total), row.recipients_total,
                 f"broadcast: {row.chunks_total} chunks", force=force)
