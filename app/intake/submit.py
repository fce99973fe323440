"""Asking for work: validate a request, write its row, publish it after commit.

``submit(session, ...)`` is for callers that hold a database session: the row joins their
transaction and the message goes out only once it commits; ``submit_many`` writes many in one
statement. ``dispatch_intent`` (app.tasks.dispatch) runs the same :func:`write_requests` for
callers that only reach the broker.

Bad input is refused with :class:`~app.core.errors.IntentRefused` naming what is wrong. Where a
row can exist (the tenant is real and active) the refusal is recorded as a ``failed`` row.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection
from sqlalchemy.orm import Session

from app import handoff
from app.broker.publish import Outgoing
from app.core import tracing
from app.core.errors import IdempotencyConflict, IntentRefused, TenantRefused
from app.core.registry import manifest
from app.core.settings import settings
from app.core.validation import (
    Refusal,
    Request,
    as_uuid,
    check_idempotency_key,
    check_max_retries,
    check_params,
    parse_run_at,
    printable_key,
    request_fingerprint,
    short,
    storable,
    unknown_intent,
)
from app.store import db, jobstore, tenants

log = logging.getLogger("jobq.dispatch")

SOURCES = ("dispatch", "submit", "direct", "schedule", "fanout", "retry", "cli", "api")


def _prepare(
    req: Request, *, source: str, now: dt.datetime, traceparent: str | None = None
) -> tuple[jobstore.NewJob, Refusal | None]:
    """The row to write for ``req``: pending, or failed with the reason it was refused."""
    tenant_id = as_uuid(req.tenant_id, "tenant_id", TenantRefused)
    # Malformed ids are the calling code's mistake: refused before anything is written, so
    # the caller's transaction stays usable.
    job_id = as_uuid(req.job_id, "job_id") if req.job_id is not None else jobstore.new_id()
    parent_id = as_uuid(req.parent_id, "parent_id") if req.parent_id is not None else None
    key = req.intent_key
    intent = manifest.get(key) if isinstance(key, str) else None
    base: dict[str, Any] = {
        "id": job_id,
        "tenant_id": tenant_id,
        "source": source,
        "parent_id": parent_id,
        "requested_by": req.requested_by,
        "traceparent": req.traceparent or traceparent,
    }
    try:
        if req.call_problem:
            raise Refusal(req.call_problem, req.call_problem_field or "dispatch_intent")
        if not isinstance(key, str) or not key:
            raise Refusal(f"intent_key must be a non-empty string, not {short(key)}", "intent_key")
        if intent is None:
            raise Refusal(unknown_intent(key, manifest), "intent_key")
        params = check_params(intent, req.intent_params)
        run_at = parse_run_at(req.run_at)
        max_retries = check_max_retries(req.max_retries, intent)
        idempotency_key = check_idempotency_key(req.idempotency_key)
    except Refusal as refusal:
        kept = storable(req.intent_params) if refusal.keep_params else None
        return jobstore.NewJob(
            **base,
            intent_key=printable_key(key),
            intent_params=kept,
            max_retries=0,
            queue=intent.queue if intent else None,
            error_message=str(refusal),
            idempotency_key=None,
            # NULL parameters would otherwise read as "none given": a retry would run the
            # intent's defaults instead of what the caller asked for.
            params_dropped=req.intent_params is not None and kept is None,
        ), refusal
    due_now = run_at is None or run_at <= now + dt.timedelta(seconds=settings.eta_max_seconds)
    approval = bool(req.requires_approval) or intent.requires_approval
    return jobstore.NewJob(
        **base,
        intent_key=key,
        intent_params=params,
        max_retries=max_retries,
        queue=intent.queue,
        run_at=run_at,
        idempotency_key=idempotency_key,
        request_hash=(request_fingerprint(key, req.intent_params, run_at)
                      if idempotency_key is not None else None),
        publish=due_now and not approval,
        approval_seconds=settings.approval_expires_seconds if approval else None,
    ), None


# --- submit ------------------------------------------------------------------------------------

def submit(
    session: Session,
    *,
    tenant_id: Any,
    intent_key: str,
    intent_params: Mapping[str, Any] | None = None,
    idempotency_key: str | None = None,
    run_at: dt.datetime | str | None = None,
    max_retries: int | None = None,
    job_id: str | None = None,
    parent_id: str | None = None,
    source: str = "submit",
    requires_approval: bool = False,
    requested_by: str | None = None,
) -> str:
    """Write a job into ``session``'s transaction and publish it once that commits.

    Returns the job id (the existing job's id when ``idempotency_key`` was seen before with
    the same request; with another intent, other parameters or another ``run_at`` it raises
    :class:`~app.core.errors.IdempotencyConflict` and writes nothing). With
    ``requires_approval`` (or an intent declared so) the job waits in ``awaiting_approval``
    until :func:`app.intake.actions.approve`; ``requested_by`` names the caller in its history.
    Raises :class:`IntentRefused` for bad input; its failed row is in the session, so commit
    to keep the audit record.
    """
    req = Request(tenant_id, intent_key, intent_params, idempotency_key, run_at, max_retries,
                  job_id, parent_id, requires_approval=requires_approval,
                  requested_by=requested_by)
    return submit_many(session, [req], source=source)[0]


def submit_many(session: Session, requests: Iterable[Request], *, source: str = "submit") -> list[str]:
    """:func:`submit` for many jobs in one statement; all or nothing.

    A refused request raises :class:`IntentRefused` for the first bad one, after writing the
    failed rows of every bad one.
    """
    with tracing.span("submit", attributes={"jobq.source": source}) as span:
        ids, outgoing, refusal = write_requests(session, requests, source=source)
        _describe(span, ids, refusal)
    if refusal is not None:
        raise refusal
    handoff.after_commit(session, outgoing)
    return ids


def _describe(span: tracing.Span, ids: list[str], refusal: IntentRefused | None) -> None:
    """What a submit span says: its job (or how many), and a refusal."""
    if len(ids) == 1:
        span.set({"jobq.job_id": ids[0]})
    span.set({"jobq.jobs": len(ids)})
    if refusal is not None:
        span.fail(str(refusal), kind=type(refusal).__name__)


def write_requests(conn: Session | Connection, requests: Iterable[Request], *, source: str
           ) -> tuple[list[str], list[Outgoing], IntentRefused | None]:
    """Validate and insert; ``(ids, messages to publish once committed, first refusal)``."""
    ids, outgoing, refusal, _written = _write(conn, requests, source=source)
    return ids, outgoing, refusal


def write_each(conn: Session | Connection, requests: Sequence[Request], *, source: str
               ) -> tuple[list[str], list[IntentRefused | None], list[Outgoing]]:
    """:func:`write_requests` saying what became of each request: ``(ids, each one's refusal or
    None, messages to publish once committed)``, so many callers' requests share one statement
    (app.intake.pump). Every request's tenant must be active (else :class:`TenantRefused`)."""
    refusals: list[IntentRefused | None] = []
    ids, outgoing, _first, _written = _write(conn, requests, source=source, refusals=refusals)
    return ids, refusals, outgoing


def record_direct_call(tenant_id: Any, intent_key: str, intent_params: Any, *,
                       job_id: str) -> None:
    """Write the row of a handler task called directly, not through the engine, so it is
    audited all the same; committed at once and never published (the caller is its run). A
    refusal keeps its failed row and is raised."""
    request = Request(tenant_id, intent_key, intent_params, job_id=job_id)
    with db.session() as session:
        _ids, _this_run, refusal = write_requests(session, [request], source="direct")
        session.commit()
    if refusal is not None:
        raise refusal


@dataclass(frozen=True)
class Submitted:
    """What :func:`submit_one` did: the job's id, and the row it wrote (None when the request
    repeated an idempotency key, so the job is an older one)."""

    id: str
    row: dict[str, Any] | None


def submit_one(session: Session, request: Request, *, source: str) -> Submitted:
    """:func:`submit` of one :class:`Request`, also saying what it wrote (the HTTP API answers
    with the new row without reading it back). Raises :class:`IntentRefused` like ``submit``."""
    with tracing.span("submit", attributes={
            "jobq.source": source, "jobq.intent": request.intent_key,
            "jobq.academy.id": str(request.tenant_id)}) as span:
        ids, outgoing, refusal, written = _write(session, [request], source=source)
        _describe(span, ids, refusal)
    if refusal is not None:
        raise refusal
    handoff.after_commit(session, outgoing)
    return Submitted(ids[0], written.get(ids[0]))


def _write(conn: Session | Connection, requests: Iterable[Request], *, source: str,
           refusals: list[IntentRefused | None] | None = None,
           ) -> tuple[list[str], list[Outgoing], IntentRefused | None, dict[str, dict[str, Any]]]:
    if source not in SOURCES:
        raise ValueError(f"source {source!r} is not one of {SOURCES}")
    now = dt.datetime.now(dt.UTC)
    traceparent = tracing.current_traceparent()
    prepared = [_prepare(r, source=source, now=now, traceparent=traceparent) for r in requests]
    inserted = jobstore.insert_jobs(conn, [job for job, _ in prepared],
                                    window=settings.fair_window)
    ids: list[str] = []
    outgoing: list[Outgoing] = []
    written: dict[str, dict[str, Any]] = {}
    first_refusal: IntentRefused | None = None
    for job, refusal in prepared:
        if job.id in inserted:
            ids.append(job.id)
            publish_now, created_at, approval_expires_at = inserted[job.id]
            written[job.id] = {**job.as_row(), "retry_count": 0, "created_at": created_at,
                               "run_at": job.run_at, "approval_expires_at": approval_expires_at}
            if refusal is not None:
                log.info("job refused: %s", job.error_message,
                         extra={"job_id": job.id, "tenant_id": job.tenant_id,
                                "intent_key": job.intent_key})
                mine = IntentRefused(str(refusal), field=refusal.field, job_id=job.id)
                first_refusal = first_refusal or mine
                if refusals is not None:
                    refusals.append(mine)
                continue
            if refusals is not None:
                refusals.append(None)
            if publish_now:  # else the fairness feeder publishes it in its turn
                intent = manifest.get(job.intent_key)
                assert intent is not None  # an unknown key was refused by _prepare
                outgoing.append(Outgoing(job.id, job.tenant_id, job.intent_key, intent.queue,
                                         job.intent_params, intent.secret_params,
                                         countdown=_countdown(job.run_at, now)))
            continue
        existing = jobstore.find_existing(conn, job)
        if existing is not None:  # a redelivered dispatch, or a repeated idempotency key
            refused: IntentRefused | None = None
            if refusal is not None:
                refused = IntentRefused(str(refusal), field=refusal.field, job_id=existing.id)
            elif not existing.same_id and not _same_request(job, existing):
                refused = _conflict(job, existing)
            first_refusal = first_refusal or refused
            if refusals is not None:
                refusals.append(refused)
            ids.append(existing.id)
            continue
        _raise_for_tenant(conn, job.tenant_id)
        raise RuntimeError(f"job {job.id} was neither written nor found")  # pragma: no cover
    return ids, outgoing, first_refusal, written


def _same_request(job: jobstore.NewJob, existing: jobstore.Existing) -> bool:
    """Whether ``job`` asks for what the job its idempotency key names asked for."""
    if existing.request_hash is not None:
        return existing.request_hash == job.request_hash
    # Written by plain SQL, or before requests were fingerprinted: what its columns ask for,
    # matched with the request as given or as validated (older rows kept the latter).
    theirs = request_fingerprint(existing.intent_key, existing.intent_params, existing.run_at)
    return theirs in (job.request_hash,
                      request_fingerprint(job.intent_key, job.intent_params, job.run_at))


def _conflict(job: jobstore.NewJob, existing: jobstore.Existing) -> IdempotencyConflict:
    log.info("idempotency key reused for a different request (job %s)", existing.id,
             extra={"tenant_id": job.tenant_id, "intent_key": job.intent_key})
    assert job.idempotency_key is not None  # the existing job was found by it
    return IdempotencyConflict.of(job.idempotency_key, existing.id)


def _countdown(run_at: dt.datetime | None, now: dt.datetime) -> float | None:
    """A near-future ``run_at`` rides a short broker countdown (a later one waits for the sweep)."""
    if run_at is None or run_at <= now:
        return None
    return (run_at - now).total_seconds()


def _raise_for_tenant(conn: Session | Connection, tenant_id: str) -> None:
    status = tenants.status_of(conn, tenant_id)
    if status is None:
        raise TenantRefused(f"unknown tenant {tenant_id}", field="tenant_id")
    if status != "active":
        raise TenantRefused(f"tenant {tenant_id} is {status}; its jobs are refused", field="tenant_id")
