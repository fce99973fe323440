"""Asking for work: validate a request, write its row, publish it after commit.

``submit(session, ...)`` is for callers that hold a database session: the row joins their
transaction and the message goes out only once it commits. ``dispatch_intent`` is the same
logic as a Celery task, for callers that only reach the broker (``dispatch_intent.delay(...)``
or, from any Celery client, ``send_task("dispatch_intent", kwargs=...)``).

Bad input is refused with :class:`~app.errors.IntentRefused` naming what is wrong. Where a
row can exist (the tenant is real and active) the refusal is recorded as a ``failed`` row.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any
from zoneinfo import ZoneInfo

from celery.worker.control import control_command
from pydantic import ValidationError
from sqlalchemy import Connection, event, text
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.orm import Session

from app import audit, db
from app.celery_app import celery_app
from app.errors import IntentRefused, TenantRefused
from app.manifest import Intent
from app.publish import Outgoing, publish_or_release
from app.registry import manifest
from app.settings import settings

log = logging.getLogger("jobq.dispatch")

#: Job ids of ``dispatch_intent`` runs derive from the dispatch message's id, so a redelivered
#: dispatch finds the row it already wrote instead of writing a second one.
DISPATCH_NAMESPACE = uuid.UUID("6f1c8d8e-2f7a-4a57-9a43-1d4a8f0f5c11")
MAX_RETRIES_LIMIT = 25
SOURCES = ("dispatch", "submit", "direct", "schedule", "fanout", "retry", "cli")


def job_id_for(dispatch_task_id: str) -> str:
    """The job id a ``dispatch_intent`` message with this task id creates."""
    return str(uuid.uuid5(DISPATCH_NAMESPACE, str(dispatch_task_id)))


@dataclass(frozen=True)
class Request:
    """One job asked for; what :func:`submit_many` takes."""

    tenant_id: Any
    intent_key: Any
    intent_params: Any = None
    idempotency_key: Any = None
    run_at: Any = None
    max_retries: Any = None
    job_id: str | None = None
    parent_id: str | None = None


# --- validation --------------------------------------------------------------------------------


class _Refusal(Exception):
    def __init__(self, message: str, field: str, keep_params: bool = True):
        super().__init__(message)
        self.field = field
        self.keep_params = keep_params


def _tenant_uuid(value: Any) -> str:
    try:
        return str(uuid.UUID(str(value)))
    except (ValueError, TypeError, AttributeError):
        raise TenantRefused(f"tenant_id {str(value)[:80]!r} is not a UUID", field="tenant_id") from None


def _json_depth(value: Any) -> int:
    depth, stack = 0, [(value, 1)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, dict | list):
            depth = max(depth, level)
            if level > settings.max_params_depth:
                return level
            children = item.values() if isinstance(item, dict) else item
            stack.extend((child, level + 1) for child in children)
    return depth


def _check_params(intent: Intent, params: Any) -> dict[str, Any]:
    """The validated, normalised parameters, or :class:`_Refusal` naming the problem."""
    if params is None:
        params = {}
    if not isinstance(params, Mapping):
        raise _Refusal(
            f"intent_params must be a JSON object, not {type(params).__name__}",
            "intent_params", keep_params=False,
        )
    depth = _json_depth(params)
    if depth > settings.max_params_depth:
        raise _Refusal(
            f"intent_params is nested more than {settings.max_params_depth} levels deep",
            "intent_params", keep_params=False,
        )
    try:
        encoded = json.dumps(params, ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise _Refusal(f"intent_params is not JSON: {exc}", "intent_params", keep_params=False) from None
    size = len(encoded.encode())
    if size > settings.max_params_bytes:
        raise _Refusal(
            f"intent_params is {size:,} bytes of JSON; the limit is "
            f"{settings.max_params_bytes:,} (JOBQ_MAX_PARAMS_BYTES)",
            "intent_params", keep_params=False,
        )
    if "\\u0000" in encoded or "\x00" in encoded:
        raise _Refusal(
            "intent_params contains a NUL character (\\u0000), which cannot be stored",
            "intent_params", keep_params=False,
        )
    try:
        model = intent.params_model.model_validate(dict(params))
    except ValidationError as exc:
        problems = []
        for err in exc.errors(include_url=False):
            where = ".".join(str(p) for p in err["loc"]) or "intent_params"
            got = "" if err["type"] == "missing" else f" (got {_short(err.get('input'))})"
            problems.append(f"{where}: {err['msg']}{got}")
        raise _Refusal(
            f"invalid intent_params for {intent.key!r}: " + "; ".join(problems),
            "intent_params." + ".".join(str(p) for p in exc.errors()[0]["loc"]),
        ) from None
    return model.model_dump(mode="json")


def _short(value: Any) -> str:
    text_ = repr(value)
    return text_ if len(text_) <= 60 else text_[:57] + "..."


def _parse_run_at(value: Any) -> dt.datetime | None:
    if value is None or value == "":
        return None
    if isinstance(value, str):
        try:
            value = dt.datetime.fromisoformat(value.strip())
        except ValueError:
            raise _Refusal(
                f"run_at {value[:60]!r} is not an ISO 8601 time (e.g. 2026-03-01T02:00:00+09:00)",
                "run_at",
            ) from None
    if isinstance(value, dt.date) and not isinstance(value, dt.datetime):
        value = dt.datetime.combine(value, dt.time())
    if not isinstance(value, dt.datetime):
        raise _Refusal(f"run_at must be an ISO 8601 string or a datetime, not {type(value).__name__}", "run_at")
    if value.tzinfo is None:  # a naive time is the academy's local time
        value = value.replace(tzinfo=ZoneInfo(settings.timezone))
    return value.astimezone(dt.UTC)


def _check_max_retries(value: Any, intent: Intent | None) -> int:
    if value is None:
        return intent.effective_max_retries if intent else settings.default_max_retries
    if isinstance(value, bool) or not isinstance(value, int):
        raise _Refusal(f"max_retries must be an integer, not {type(value).__name__}", "max_retries")
    if not 0 <= value <= MAX_RETRIES_LIMIT:
        raise _Refusal(f"max_retries {value} must be within 0..{MAX_RETRIES_LIMIT}", "max_retries")
    return value


def _check_idempotency_key(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value or len(value) > settings.max_key_length:
        raise _Refusal(
            f"idempotency_key must be a non-empty string of at most {settings.max_key_length} characters",
            "idempotency_key",
        )
    if "\x00" in value:
        raise _Refusal("idempotency_key contains a NUL character", "idempotency_key")
    return value


def _printable_key(value: Any) -> str:
    key = value if isinstance(value, str) else repr(value)
    key = key.replace("\x00", "\\0")
    limit = settings.max_key_length
    return key if len(key) <= limit else key[:limit] + "…"


def _prepare(
    req: Request, *, source: str, now: dt.datetime
) -> tuple[audit.NewJob, _Refusal | None]:
    """The row to write for ``req``: pending, or failed with the reason it was refused."""
    tenant_id = _tenant_uuid(req.tenant_id)
    job_id = req.job_id or audit.new_id()
    key = req.intent_key
    intent = manifest.get(key) if isinstance(key, str) else None
    base = {
        "id": job_id,
        "tenant_id": tenant_id,
        "source": source,
        "parent_id": req.parent_id,
    }
    try:
        if not isinstance(key, str) or not key:
            raise _Refusal(f"intent_key must be a non-empty string, not {_short(key)}", "intent_key")
        if intent is None:
            hint = manifest.suggest(key) if len(key) <= settings.max_key_length else []
            raise _Refusal(
                f"unknown intent key {_printable_key(key)!r}"
                + (f" (did you mean {', '.join(map(repr, hint))}?)" if hint else ""),
                "intent_key",
            )
        params = _check_params(intent, req.intent_params)
        run_at = _parse_run_at(req.run_at)
        max_retries = _check_max_retries(req.max_retries, intent)
        idempotency_key = _check_idempotency_key(req.idempotency_key)
    except _Refusal as refusal:
        kept = req.intent_params if refusal.keep_params and isinstance(req.intent_params, Mapping) else None
        return audit.NewJob(
            **base,
            intent_key=_printable_key(key),
            intent_params=kept,
            max_retries=0,
            queue=intent.queue if intent else None,
            error_message=str(refusal),
            idempotency_key=None,
        ), refusal
    due_now = run_at is None or run_at <= now + dt.timedelta(seconds=settings.eta_max_seconds)
    return audit.NewJob(
        **base,
        intent_key=key,
        intent_params=params,
        max_retries=max_retries,
        queue=intent.queue,
        run_at=run_at,
        idempotency_key=idempotency_key,
        publish=due_now,
    ), None


# --- submit ------------------------------------------------------------------------------------

_TENANT_STATUS = text("SELECT status FROM tenants WHERE id = CAST(:id AS uuid)")


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
) -> str:
    """Write a job into ``session``'s transaction and publish it once that commits.

    Returns the job id (the existing job's id when ``idempotency_key`` was seen before).
    Raises :class:`IntentRefused` for bad input; its failed row is in the session, so commit
    to keep the audit record.
    """
    req = Request(tenant_id, intent_key, intent_params, idempotency_key, run_at, max_retries,
                  job_id, parent_id)
    return submit_many(session, [req], source=source)[0]


def submit_many(session: Session, requests: Iterable[Request], *, source: str = "submit") -> list[str]:
    """:func:`submit` for many jobs in one statement; all or nothing.

    A refused request raises :class:`IntentRefused` for the first bad one, after writing the
    failed rows of every bad one.
    """
    ids, outgoing, refusal = _write(session, requests, source=source)
    if refusal is not None:
        raise refusal
    _publish_after_commit(session, outgoing)
    return ids


def _write(conn: Session | Connection, requests: Iterable[Request], *, source: str
           ) -> tuple[list[str], list[Outgoing], IntentRefused | None]:
    """Validate and insert; ``(ids, messages to publish once committed, first refusal)``."""
    if source not in SOURCES:
        raise ValueError(f"source {source!r} is not one of {SOURCES}")
    now = dt.datetime.now(dt.UTC)
    prepared = [_prepare(r, source=source, now=now) for r in requests]
    inserted = audit.insert_jobs(conn, [job for job, _ in prepared])
    ids: list[str] = []
    outgoing: list[Outgoing] = []
    first_refusal: IntentRefused | None = None
    for job, refusal in prepared:
        if job.id in inserted:
            ids.append(job.id)
            if refusal is not None:
                log.info("job refused: %s", job.error_message,
                         extra={"job_id": job.id, "tenant_id": job.tenant_id,
                                "intent_key": job.intent_key})
                first_refusal = first_refusal or IntentRefused(
                    str(refusal), field=refusal.field, job_id=job.id)
            elif job.publish:
                intent = manifest.get(job.intent_key)
                outgoing.append(Outgoing(job.id, job.tenant_id, job.intent_key, intent.queue,
                                         job.intent_params, intent.secret_params,
                                         countdown=_countdown(job.run_at, now)))
            continue
        existing = audit.find_existing(conn, job)
        if existing is not None:  # a redelivered dispatch, or a repeated idempotency key
            if refusal is not None:
                first_refusal = first_refusal or IntentRefused(
                    str(refusal), field=refusal.field, job_id=existing[0])
            ids.append(existing[0])
            continue
        _raise_for_tenant(conn, job.tenant_id)
        raise RuntimeError(f"job {job.id} was neither written nor found")  # pragma: no cover
    return ids, outgoing, first_refusal


def _countdown(run_at: dt.datetime | None, now: dt.datetime) -> float | None:
    """A near-future ``run_at`` rides a short broker countdown (a later one waits for the sweep)."""
    if run_at is None or run_at <= now:
        return None
    return (run_at - now).total_seconds()


def _raise_for_tenant(conn: Session | Connection, tenant_id: str) -> None:
    row = conn.execute(_TENANT_STATUS, {"id": tenant_id}).first()
    if row is None:
        raise TenantRefused(f"unknown tenant {tenant_id}", field="tenant_id")
    if row[0] != "active":
        raise TenantRefused(f"tenant {tenant_id} is {row[0]}; its jobs are refused", field="tenant_id")


# --- publishing after commit -------------------------------------------------------------------

_PENDING = "jobq_outgoing"


def _publish_after_commit(session: Session, jobs: list[Outgoing]) -> None:
    if jobs:
        session.info.setdefault(_PENDING, []).extend(jobs)


@event.listens_for(Session, "after_commit")
def _after_commit(session: Session) -> None:
    jobs = session.info.pop(_PENDING, None)
    if jobs:
        publish_or_release(jobs)


@event.listens_for(Session, "after_rollback")
def _after_rollback(session: Session) -> None:
    session.info.pop(_PENDING, None)


# --- the task ----------------------------------------------------------------------------------


def _is_db_outage(exc: BaseException) -> bool:
    return isinstance(exc, OperationalError) or (
        isinstance(exc, DBAPIError) and exc.connection_invalidated
    )


@celery_app.task(name="dispatch_intent", bind=True, queue="dispatch", ignore_result=False,
                 acks_late=True, max_retries=None)
def dispatch_intent(self, tenant_id: str, intent_key: str, intent_params: dict | None = None,
                    idempotency_key: str | None = None, run_at: str | None = None,
                    max_retries: int | None = None) -> str:
    """Validate, write the job's row and its first event, publish it; return the job id."""
    job_id = job_id_for(self.request.id) if self.request.id else None
    request = Request(tenant_id, intent_key, intent_params, idempotency_key, run_at, max_retries,
                      job_id)
    try:
        # One autocommit statement: the row (or the refusal's row) is durable before the
        # message goes out, and a redelivered dispatch finds it by its derived id.
        with db.engine().connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            ids, outgoing, refusal = _write(conn, [request], source="dispatch")
    except IntentRefused:
        raise
    except Exception as exc:
        if _is_db_outage(exc):
            delay = min(60.0, 1.0 * 2 ** min(self.request.retries, 6))
            log.warning("database unavailable for dispatch of %s; retrying in %.0fs: %s",
                        intent_key, delay, exc)
            raise self.retry(exc=exc, countdown=delay) from None
        raise
    if refusal is not None:
        raise refusal
    publish_or_release(outgoing)
    return ids[0]


# --- cancel ------------------------------------------------------------------------------------


def cancel(job_id: str, *, reason: str = "cancelled", by: str = "api") -> str | None:
    """Cancel a pending or running job and revoke its message; the status it had, or None."""
    job_id = str(uuid.UUID(str(job_id)))
    with db.engine().begin() as conn:
        was = audit.cancel(conn, job_id, reason=reason, by=by)
    if was is not None:
        celery_app.control.revoke(job_id, terminate=(was == "processing"), signal="SIGTERM")
        log.info("job cancelled (was %s)", was, extra={"job_id": job_id})
    return was


@celery_app.task(name="jobq.cancel_job", queue="dispatch", ignore_result=False)
def cancel_job(job_id: str, reason: str = "cancelled") -> str | None:
    """:func:`cancel` as a task."""
    return cancel(job_id, reason=reason, by="task")


@control_command(args=[("ids", list)], signature="<job_id> [job_id ...]")
def jobq_forget_revoked(state, ids):
    """A worker's side of :func:`forget_revoked`."""
    from celery.worker import state as worker_state

    for job_id in ids:
        worker_state.revoked.discard(job_id)
    return {"ok": f"forgot {len(ids)} revoke(s)"}


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
