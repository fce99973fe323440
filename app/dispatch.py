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
import difflib
import json
import logging
import math
import time
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
from app.messages import CheckedTask
from app.publish import Outgoing, publish_or_release
from app.redaction import is_secret_field, redacted_call
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
    #: What is wrong with the call itself (an unknown keyword, too many arguments), refused
    #: like any bad input; and the argument it names.
    call_problem: str | None = None
    call_problem_field: str | None = None


# --- validation --------------------------------------------------------------------------------

#: A refusal lists this many problems with the parameters, then says how many more there are.
MAX_PROBLEMS = 10
#: Field names and keys longer than this are cut short in refusals.
MAX_NAME_SHOWN = 40


class _Refusal(Exception):
    def __init__(self, message: str, field: str, keep_params: bool = True):
        super().__init__(message)
        self.field = field
        self.keep_params = keep_params


def _short(value: Any, limit: int = 60) -> str:
    """``repr(value)``, cut short: control characters and lone surrogates come out escaped."""
    text_ = repr(value) if not isinstance(value, str) else repr(value[: limit + 1])
    return text_ if len(text_) <= limit else text_[: limit - 3] + "..."


def _printable(value: str, limit: int | None = None) -> str:
    """``value`` with every unprintable character (controls, NUL, lone surrogates) escaped as
    Python would, so it can be stored and shown in a terminal as it is; cut at ``limit``."""
    if limit is not None and len(value) > limit:
        return _printable(value[:limit]) + "…"
    if value.isprintable():
        return value
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in value)


def _text_problem(value: str) -> str | None:
    """Why PostgreSQL cannot store ``value`` as text or in jsonb, or None."""
    if "\x00" in value:
        return "contains a NUL character (\\u0000), which cannot be stored"
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        return (f"contains a lone surrogate ({value[exc.start]!r}), "
                "which is not valid Unicode text")[: 200]
    return None


def _uuid(value: Any, field: str, refusal: type[IntentRefused] = IntentRefused) -> str:
    try:
        return str(uuid.UUID(str(value)))
    except (ValueError, TypeError, AttributeError):
        raise refusal(f"{field} {_short(value)} is not a UUID", field=field) from None


def _json_problem(value: Any, root: str = "intent_params") -> tuple[str, str] | None:
    """``(where, what)`` of the first thing in ``value`` that is not JSON PostgreSQL can store:
    a value JSON has no type for, NaN or infinity, a key that is not text, NUL or a lone
    surrogate in text, nesting deeper than JOBQ_MAX_PARAMS_DEPTH; None when all is well."""
    limit = settings.max_params_depth
    stack: list[tuple[Any, str, int]] = [(value, root, 1)]
    while stack:
        item, where, depth = stack.pop()
        if item is None or isinstance(item, bool | int):
            continue
        if isinstance(item, str):
            problem = _text_problem(item)
            if problem:
                return where, f"{where} {problem}"
        elif isinstance(item, float):
            if not math.isfinite(item):
                return where, f"{where}: {item!r} is not a JSON number"
        elif isinstance(item, dict | list | tuple):
            if depth > limit:
                return root, f"{root} is nested more than {limit} levels deep"
            if isinstance(item, dict):
                for key, child in item.items():
                    if not isinstance(key, str):
                        return where, f"{where}: key {_short(key)} is not a string"
                    problem = _text_problem(key)
                    if problem:
                        return where, f"{where}: key {_short(key, MAX_NAME_SHOWN)} {problem}"
                    stack.append((child, f"{where}.{_printable(key, MAX_NAME_SHOWN)}", depth + 1))
            else:
                stack.extend((child, f"{where}[{i}]", depth + 1) for i, child in enumerate(item))
        else:
            hint = " (send an ISO 8601 string)" if isinstance(item, dt.date) else ""
            return where, f"{where}: {type(item).__name__} is not a JSON value{hint}"
    return None


def _json_size_problem(params: Mapping[str, Any]) -> str | None:
    """Why ``params`` (already free of :func:`_json_problem`) is too big, or None."""
    try:
        encoded = json.dumps(params, ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError, RecursionError) as exc:  # e.g. an int of 5,000 digits
        return f"intent_params is not JSON: {str(exc)[:120]}"
    size = len(encoded.encode())
    if size > settings.max_params_bytes:
        return (f"intent_params is {size:,} bytes of JSON; the limit is "
                f"{settings.max_params_bytes:,} (JOBQ_MAX_PARAMS_BYTES)")
    return None


def _storable(params: Any) -> dict[str, Any] | None:
    """``params`` as a refused job's row may keep them: a JSON object PostgreSQL can store,
    within the size limit; otherwise None (the row keeps only the reason)."""
    if not isinstance(params, Mapping):
        return None
    params = dict(params)
    if _json_problem(params) or _json_size_problem(params):
        return None
    return params


def _check_params(intent: Intent, params: Any) -> dict[str, Any]:
    """The validated, normalised parameters, or :class:`_Refusal` naming the problem."""
    if params is None:
        params = {}
    if not isinstance(params, Mapping):
        raise _Refusal(
            f"intent_params must be a JSON object, not {type(params).__name__}",
            "intent_params", keep_params=False,
        )
    params = dict(params)
    found = _json_problem(params)
    if found:
        where, message = found
        raise _Refusal(message, where, keep_params=False)
    too_big = _json_size_problem(params)
    if too_big:
        raise _Refusal(too_big, "intent_params", keep_params=False)
    try:
        model = intent.params_model.model_validate(params)
    except ValidationError as exc:
        message, field = invalid_params(intent, exc)
        raise _Refusal(message, field) from None
    return model.model_dump(mode="json")


def invalid_params(intent: Intent, exc: ValidationError) -> tuple[str, str]:
    """``(message, field)`` of parameters the intent's model refused: each problem named by its
    field, with what was given (a secret's value unshown), never a link to pydantic's docs."""
    errors = exc.errors(include_url=False)
    problems = [_problem(intent, err) for err in errors[:MAX_PROBLEMS]]
    if len(errors) > MAX_PROBLEMS:
        problems.append(f"and {len(errors) - MAX_PROBLEMS} more problems")
    first = ".".join(_printable(str(p), MAX_NAME_SHOWN) for p in errors[0]["loc"])
    return (f"invalid intent_params for {intent.key!r}: " + "; ".join(problems),
            "intent_params" + (f".{first}" if first else ""))


def validate_params(intent: Intent, params: Any) -> dict[str, Any]:
    """``params`` as the intent's model normalises them, or :class:`IntentRefused` naming
    each problem (for parameters given again, e.g. a retry with corrected ones)."""
    try:
        return _check_params(intent, params)
    except _Refusal as refusal:
        raise IntentRefused(str(refusal), field=refusal.field) from None


def _problem(intent: Intent, err: Any) -> str:
    """One validation error as ``field: what is wrong (got value)``; a secret's value unshown."""
    loc = [str(p) for p in err["loc"]]
    where = ".".join(_printable(p, MAX_NAME_SHOWN) for p in loc) or "intent_params"
    secret = any(is_secret_field(p, intent.secret_params) for p in loc)
    if err["type"] == "missing":
        got = ""
    elif secret:
        got = " (value hidden: a secret)"
    else:
        got = f" (got {_short(err.get('input'))})"
    return f"{where}: {err['msg']}{got}"


def _parse_run_at(value: Any) -> dt.datetime | None:
    if value is None or value == "":
        return None
    if isinstance(value, str):
        try:
            value = dt.datetime.fromisoformat(value.strip())
        except ValueError:
            raise _Refusal(
                f"run_at {_short(value)} is not an ISO 8601 time (e.g. 2026-03-01T02:00:00+09:00)",
                "run_at",
            ) from None
    if isinstance(value, dt.date) and not isinstance(value, dt.datetime):
        value = dt.datetime.combine(value, dt.time())
    if not isinstance(value, dt.datetime):
        raise _Refusal(f"run_at must be an ISO 8601 string or a datetime, not {type(value).__name__}", "run_at")
    shown = value
    try:
        if value.tzinfo is None:  # a naive time is the academy's local time
            value = value.replace(tzinfo=ZoneInfo(settings.timezone))
        return value.astimezone(dt.UTC)
    except (OverflowError, ValueError):  # within a day of year 1 or year 9999
        raise _Refusal(f"run_at {_short(shown.isoformat())} is out of range", "run_at") from None


def _check_max_retries(value: Any, intent: Intent | None) -> int:
    if value is None:
        return intent.effective_max_retries if intent else settings.default_max_retries
    if isinstance(value, bool) or not isinstance(value, int):
        raise _Refusal(f"max_retries must be an integer, not {type(value).__name__}", "max_retries")
    if not 0 <= value <= MAX_RETRIES_LIMIT:
        raise _Refusal(f"max_retries {_short(value)} must be within 0..{MAX_RETRIES_LIMIT}", "max_retries")
    return value


def _check_idempotency_key(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value or len(value) > settings.max_key_length:
        raise _Refusal(
            f"idempotency_key must be a non-empty string of at most {settings.max_key_length} characters",
            "idempotency_key",
        )
    problem = _text_problem(value)
    if problem:
        raise _Refusal(f"idempotency_key {problem}", "idempotency_key")
    return value


def _printable_key(value: Any) -> str:
    """An intent key as a refused job's row keeps it: printable, at most a key's length."""
    key = value if isinstance(value, str) else repr(value)
    return _printable(key, settings.max_key_length)


def _prepare(
    req: Request, *, source: str, now: dt.datetime
) -> tuple[audit.NewJob, _Refusal | None]:
    """The row to write for ``req``: pending, or failed with the reason it was refused."""
    tenant_id = _uuid(req.tenant_id, "tenant_id", TenantRefused)
    # Malformed ids are the calling code's mistake: refused before anything is written, so
    # the caller's transaction stays usable.
    job_id = _uuid(req.job_id, "job_id") if req.job_id is not None else audit.new_id()
    parent_id = _uuid(req.parent_id, "parent_id") if req.parent_id is not None else None
    key = req.intent_key
    intent = manifest.get(key) if isinstance(key, str) else None
    base = {
        "id": job_id,
        "tenant_id": tenant_id,
        "source": source,
        "parent_id": parent_id,
    }
    try:
        if req.call_problem:
            raise _Refusal(req.call_problem, req.call_problem_field or "dispatch_intent")
        if not isinstance(key, str) or not key:
            raise _Refusal(f"intent_key must be a non-empty string, not {_short(key)}", "intent_key")
        if intent is None:
            hint = manifest.suggest(key) if len(key) <= settings.max_key_length else []
            raise _Refusal(
                f"unknown intent key {_short(key, settings.max_key_length)}"
                + (f" (did you mean {', '.join(map(repr, hint))}?)" if hint else ""),
                "intent_key",
            )
        params = _check_params(intent, req.intent_params)
        run_at = _parse_run_at(req.run_at)
        max_retries = _check_max_retries(req.max_retries, intent)
        idempotency_key = _check_idempotency_key(req.idempotency_key)
    except _Refusal as refusal:
        kept = _storable(req.intent_params) if refusal.keep_params else None
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


DISPATCH_ARGUMENTS = ("tenant_id", "intent_key", "intent_params", "idempotency_key", "run_at",
                      "max_retries")


class DispatchTask(CheckedTask):
    """``dispatch_intent``'s task class: its parameters never show unredacted, neither in the
    sent event the caller's process emits nor in what the worker reports to Flower."""

    def apply_async(self, args=None, kwargs=None, **options):
        if "argsrepr" not in options and "kwargsrepr" not in options:
            options["argsrepr"], options["kwargsrepr"] = self.shown_arguments(args, kwargs)
        return super().apply_async(args, kwargs, **options)

    def shown_arguments(self, args: Any, kwargs: Any) -> tuple[str, str]:
        named = dict(zip(DISPATCH_ARGUMENTS, args or (), strict=False))
        key = (kwargs or {}).get("intent_key", named.get("intent_key"))
        intent = manifest.get(key) if isinstance(key, str) else None
        return redacted_call(args, kwargs, intent.secret_params if intent else ())


def dispatch_request(args: Any, kwargs: Any, job_id: str | None) -> Request:
    """The request in a ``dispatch_intent`` message, whatever shape a client gave it: what
    cannot be read as :data:`DISPATCH_ARGUMENTS` (an unknown keyword, more positional arguments
    than there are, one argument given twice) becomes its ``call_problem``."""
    args, kwargs = list(args or ()), dict(kwargs or {})
    problems: list[str] = []
    field: str | None = None
    for name in kwargs:
        if name in DISPATCH_ARGUMENTS:
            continue
        shown = _short(name, MAX_NAME_SHOWN) if isinstance(name, str) else _short(name)
        hint = (difflib.get_close_matches(name, DISPATCH_ARGUMENTS, n=1)
                if isinstance(name, str) else [])
        problems.append(f"unknown argument {shown} for dispatch_intent"
                        + (f" (did you mean {hint[0]!r}?)" if hint else ""))
        field = field or (_printable(name, MAX_NAME_SHOWN) if isinstance(name, str) else "kwargs")
    if len(args) > len(DISPATCH_ARGUMENTS):
        problems.append(f"dispatch_intent takes at most {len(DISPATCH_ARGUMENTS)} positional "
                        f"arguments ({', '.join(DISPATCH_ARGUMENTS)}), not {len(args)}")
        field = field or "args"
    named = dict(zip(DISPATCH_ARGUMENTS, args, strict=False))
    for name in named:
        if name in kwargs:
            problems.append(f"dispatch_intent got {name!r} both by position and by keyword")
            field = field or name
    values = {**named, **{k: v for k, v in kwargs.items() if k in DISPATCH_ARGUMENTS}}
    if any(p.startswith("unknown argument") for p in problems):
        problems.append(f"it takes {', '.join(DISPATCH_ARGUMENTS)}")
    return Request(values.get("tenant_id"), values.get("intent_key"), values.get("intent_params"),
                   values.get("idempotency_key"), values.get("run_at"), values.get("max_retries"),
                   job_id, call_problem="; ".join(problems) or None, call_problem_field=field)


# A refusal is an expected outcome (``throws``): Celery logs it in one line, not as a crash.
# Any call shape is taken (``*args, **kwargs``): a client's unknown keyword or extra argument is
# refused as bad input, with its failed row where the tenant is real and active, instead of a
# TypeError from Python that only the caller's result would show.
@celery_app.task(name="dispatch_intent", bind=True, queue="dispatch", ignore_result=False,
                 acks_late=True, max_retries=None, throws=(IntentRefused,), base=DispatchTask)
def dispatch_intent(self, *args: Any, **kwargs: Any) -> str:
    """Validate, write the job's row and its first event, publish it; return the job id.

    Arguments (by keyword, or in this order): tenant_id, intent_key, intent_params=None,
    idempotency_key=None, run_at=None, max_retries=None.
    """
    job_id = job_id_for(self.request.id) if self.request.id else None
    request = dispatch_request(args, kwargs, job_id)
    try:
        # One autocommit statement: the row (or the refusal's row) is durable before the
        # message goes out, and a redelivered dispatch finds it by its derived id.
        with db.engine().connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            ids, outgoing, refusal = _write(conn, [request], source="dispatch")
    except TenantRefused as exc:
        if request.call_problem:  # no row to keep it in: say both
            raise TenantRefused(f"{exc}; {request.call_problem}", field=exc.field) from None
        raise
    except IntentRefused:
        raise
    except Exception as exc:
        if _is_db_outage(exc):
            delay = min(60.0, 1.0 * 2 ** min(self.request.retries, 6))
            log.warning("database unavailable for dispatch of %s; retrying in %.0fs: %s",
                        _short(request.intent_key), delay, exc)
            raise self.retry(exc=exc, countdown=delay) from None
        raise
    if refusal is not None:
        raise refusal
    publish_or_release(outgoing)
    return ids[0]


# --- cancel ------------------------------------------------------------------------------------


def cancel(job_id: str, *, reason: str = "cancelled", by: str = "api") -> str | None:
    """Cancel a pending or running job; the status it had, or None when it was neither.

    A pending job never runs. A running job's run is stopped by its own worker process within
    about a second, on every pool: at its next Python step (a call blocked in C code finishes
    first: a database statement, and on a threads-pool worker also a long sleep or network
    wait). Its uncommitted work is rolled back, and its end is recorded as a ``stopped`` event;
    :func:`run_stopped` waits for it.
    """
    job_id = str(uuid.UUID(str(job_id)))
    with db.engine().begin() as conn:
        was = audit.cancel(conn, job_id, reason=reason, by=by)
    if was is not None:
        # Drops a message not yet run. No ``terminate``: that signals whichever task the pool
        # process runs by then; the run's own process stops it (app.lease, app.stopping).
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
            found = audit.stopped_after_cancel(conn, job_id)
        if found is not None:
            after, worker, detail = found
            ran_ms = detail.get("ran_ms")
            return StoppedRun(after, worker, bool(detail.get("interrupted")),
                              None if ran_ms is None else ran_ms / 1000)
        if time.monotonic() >= deadline:
            return None
        time.sleep(0.05)


@celery_app.task(name="jobq.cancel_job", queue="dispatch", ignore_result=False)
def cancel_job(job_id: str, reason: str = "cancelled") -> str | None:
    """:func:`cancel` as a task: the status the job had. A running job's run stops as there."""
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
