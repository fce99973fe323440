"""Checking a request for work before anything is written: the tenant and job ids, the intent key,
its parameters against the intent's model, ``run_at``, ``max_retries``, the idempotency key, and
the shape of a ``dispatch_intent`` call. Pure: every problem becomes a :class:`Refusal` (or an
:class:`~app.core.errors.IntentRefused`) that names the field and what is wrong with it.
"""

from __future__ import annotations

import datetime as dt
import difflib
import hashlib
import json
import math
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from zoneinfo import ZoneInfo

from pydantic import ValidationError

from app.core.errors import IntentRefused
from app.core.manifest import Intent, Manifest
from app.core.redaction import is_secret_field
from app.core.settings import settings

#: Job ids of ``dispatch_intent`` runs derive from the dispatch message's id, so a redelivered
#: dispatch finds the row it already wrote instead of writing a second one.
DISPATCH_NAMESPACE = uuid.UUID("6f1c8d8e-2f7a-4a57-9a43-1d4a8f0f5c11")
MAX_RETRIES_LIMIT = 25


def is_uuid(value: Any) -> bool:
    """Whether ``value`` reads as a UUID (a job id, a tenant id)."""
    try:
        uuid.UUID(str(value))
    except ValueError:
        return False
    return True


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
    #: Wait in ``awaiting_approval`` until someone approves it (also when the intent says so).
    requires_approval: bool = False
    #: Who asks (``api:web``, a JWT subject, ``cli:user@host``), named in the job's history.
    requested_by: str | None = None
    #: The W3C traceparent the job's spans join; None: the span current where it is written
    #: (app.core.tracing), if any.
    traceparent: str | None = None



#: A refusal lists this many problems with the parameters, then says how many more there are.
MAX_PROBLEMS = 10
#: Field names and keys longer than this are cut short in refusals.
MAX_NAME_SHOWN = 40


class Refusal(Exception):
    def __init__(self, message: str, field: str, keep_params: bool = True):
        super().__init__(message)
        self.field = field
        self.keep_params = keep_params


def short(value: Any, limit: int = 60) -> str:
    """``repr(value)``, cut short: control characters and lone surrogates come out escaped."""
    text_ = repr(value) if not isinstance(value, str) else repr(value[: limit + 1])
    return text_ if len(text_) <= limit else text_[: limit - 3] + "..."


def unknown_intent(key: Any, known: Manifest) -> str:
    """Why ``key`` names no intent of ``known``, with the keys it comes close to: the one
    wording of every refusal of an unknown key (a request, a row written by plain SQL, a
    schedule)."""
    limit = settings.max_key_length
    hint = known.suggest(key) if isinstance(key, str) and len(key) <= limit else []
    return (f"unknown intent key {short(key, limit)}"
            + (f" (did you mean {', '.join(map(repr, hint))}?)" if hint else ""))


def printable(value: str, limit: int | None = None) -> str:
    """``value`` with every unprintable character (controls, NUL, lone surrogates) escaped as
    Python would, so it can be stored and shown in a terminal as it is; cut at ``limit``."""
    if limit is not None and len(value) > limit:
        return printable(value[:limit]) + "…"
    if value.isprintable():
        return value
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in value)


def text_problem(value: str) -> str | None:
    """Why PostgreSQL cannot store ``value`` as text or in jsonb, or None."""
    if "\x00" in value:
        return "contains a NUL character (\\u0000), which cannot be stored"
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        return (f"contains a lone surrogate ({value[exc.start]!r}), "
                "which is not valid Unicode text")[: 200]
    return None


def as_uuid(value: Any, field: str, refusal: type[IntentRefused] = IntentRefused) -> str:
    try:
        return str(uuid.UUID(str(value)))
    except (ValueError, TypeError, AttributeError):
        raise refusal(f"{field} {short(value)} is not a UUID", field=field) from None


def json_problem(value: Any, root: str = "intent_params") -> tuple[str, str] | None:
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
            problem = text_problem(item)
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
                        return where, f"{where}: key {short(key)} is not a string"
                    problem = text_problem(key)
                    if problem:
                        return where, f"{where}: key {short(key, MAX_NAME_SHOWN)} {problem}"
                    stack.append((child, f"{where}.{printable(key, MAX_NAME_SHOWN)}", depth + 1))
            else:
                stack.extend((child, f"{where}[{i}]", depth + 1) for i, child in enumerate(item))
        else:
            hint = " (send an ISO 8601 string)" if isinstance(item, dt.date) else ""
            return where, f"{where}: {type(item).__name__} is not a JSON value{hint}"
    return None


def json_size_problem(params: Mapping[str, Any]) -> str | None:
    """Why ``params`` (already free of :func:`json_problem`) is too big, or None."""
    try:
        encoded = json.dumps(params, ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError, RecursionError) as exc:  # e.g. an int of 5,000 digits
        return f"intent_params is not JSON: {str(exc)[:120]}"
    size = len(encoded.encode())
    if size > settings.max_params_bytes:
        return (f"intent_params is {size:,} bytes of JSON; the limit is "
                f"{settings.max_params_bytes:,} (JOBQ_MAX_PARAMS_BYTES)")
    return None


def storable(params: Any) -> dict[str, Any] | None:
    """``params`` as a refused job's row may keep them: a JSON object PostgreSQL can store,
    within the size limit; otherwise None (the row keeps only the reason)."""
    if not isinstance(params, Mapping):
        return None
    params = dict(params)
    if json_problem(params) or json_size_problem(params):
        return None
    return params


def check_params(intent: Intent, params: Any) -> dict[str, Any]:
    """The validated, normalised parameters, or :class:`Refusal` naming the problem."""
    if params is None:
        params = {}
    if not isinstance(params, Mapping):
        raise Refusal(
            f"intent_params must be a JSON object, not {type(params).__name__}",
            "intent_params", keep_params=False,
        )
    params = dict(params)
    found = json_problem(params)
    if found:
        where, message = found
        raise Refusal(message, where, keep_params=False)
    too_big = json_size_problem(params)
    if too_big:
        raise Refusal(too_big, "intent_params", keep_params=False)
    try:
        model = intent.params_model.model_validate(params)
    except ValidationError as exc:
        message, field = invalid_params(intent, exc)
        raise Refusal(message, field) from None
    return model.model_dump(mode="json")


def invalid_params(intent: Intent, exc: ValidationError) -> tuple[str, str]:
    """``(message, field)`` of parameters the intent's model refused: each problem named by its
    field, with what was given (a secret's value unshown), never a link to pydantic's docs."""
    errors = exc.errors(include_url=False)
    problems = [problem(intent, err) for err in errors[:MAX_PROBLEMS]]
    if len(errors) > MAX_PROBLEMS:
        problems.append(f"and {len(errors) - MAX_PROBLEMS} more problems")
    first = ".".join(printable(str(p), MAX_NAME_SHOWN) for p in errors[0]["loc"])
    return (f"invalid intent_params for {intent.key!r}: " + "; ".join(problems),
            "intent_params" + (f".{first}" if first else ""))


def validate_params(intent: Intent, params: Any) -> dict[str, Any]:
    """``params`` as the intent's model normalises them, or :class:`IntentRefused` naming
    each problem (for parameters given again, e.g. a retry with corrected ones)."""
    try:
        return check_params(intent, params)
    except Refusal as refusal:
        raise IntentRefused(str(refusal), field=refusal.field) from None


def problem(intent: Intent, err: Any) -> str:
    """One validation error as ``field: what is wrong (got value)``; a secret's value unshown."""
    loc = [str(p) for p in err["loc"]]
    where = ".".join(printable(p, MAX_NAME_SHOWN) for p in loc) or "intent_params"
    secret = any(is_secret_field(p, intent.secret_params) for p in loc)
    if err["type"] == "missing":
        got = ""
    elif secret:
        got = " (value hidden: a secret)"
    else:
        got = f" (got {short(err.get('input'))})"
    return f"{where}: {err['msg']}{got}"


def parse_run_at(value: Any) -> dt.datetime | None:
    if value is None or value == "":
        return None
    if isinstance(value, str):
        try:
            value = dt.datetime.fromisoformat(value.strip())
        except ValueError:
            raise Refusal(
                f"run_at {short(value)} is not an ISO 8601 time (e.g. 2026-03-01T02:00:00+09:00)",
                "run_at",
            ) from None
    if isinstance(value, dt.date) and not isinstance(value, dt.datetime):
        value = dt.datetime.combine(value, dt.time())
    if not isinstance(value, dt.datetime):
        raise Refusal(f"run_at must be an ISO 8601 string or a datetime, not {type(value).__name__}", "run_at")
    shown = value
    try:
        if value.tzinfo is None:  # a naive time is the academy's local time
            value = value.replace(tzinfo=ZoneInfo(settings.timezone))
        return value.astimezone(dt.UTC)
    except (OverflowError, ValueError):  # within a day of year 1 or year 9999
        raise Refusal(f"run_at {short(shown.isoformat())} is out of range", "run_at") from None


def check_max_retries(value: Any, intent: Intent | None) -> int:
    if value is None:
        return intent.effective_max_retries if intent else settings.default_max_retries
    if isinstance(value, bool) or not isinstance(value, int):
        raise Refusal(f"max_retries must be an integer, not {type(value).__name__}", "max_retries")
    if not 0 <= value <= MAX_RETRIES_LIMIT:
        raise Refusal(f"max_retries {short(value)} must be within 0..{MAX_RETRIES_LIMIT}", "max_retries")
    return value


def check_idempotency_key(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value or len(value) > settings.max_key_length:
        raise Refusal(
            f"idempotency_key must be a non-empty string of at most {settings.max_key_length} characters",
            "idempotency_key",
        )
    problem = text_problem(value)
    if problem:
        raise Refusal(f"idempotency_key {problem}", "idempotency_key")
    return value


def request_fingerprint(intent_key: str, params: Any, run_at: dt.datetime | None) -> str:
    """What makes a repeat under an idempotency key the same request: its intent, its
    parameters as given (none given: ``{}``) and its ``run_at`` as an instant, as the SHA-256
    of their canonical JSON (keys sorted, so the order they were written in does not count)."""
    canonical = json.dumps(
        {"intent_key": intent_key,
         "intent_params": dict(params) if isinstance(params, Mapping) else params or {},
         "run_at": None if run_at is None else run_at.astimezone(dt.UTC).isoformat()},
        sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


def printable_key(value: Any) -> str:
    """An intent key as a refused job's row keeps it: printable, at most a key's length."""
    key = value if isinstance(value, str) else repr(value)
    return printable(key, settings.max_key_length)


DISPATCH_ARGUMENTS = ("tenant_id", "intent_key", "intent_params", "idempotency_key", "run_at",
                      "max_retries")


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
        shown = short(name, MAX_NAME_SHOWN) if isinstance(name, str) else short(name)
        hint = (difflib.get_close_matches(name, DISPATCH_ARGUMENTS, n=1)
                if isinstance(name, str) else [])
        problems.append(f"unknown argument {shown} for dispatch_intent"
                        + (f" (did you mean {hint[0]!r}?)" if hint else ""))
        field = field or (printable(name, MAX_NAME_SHOWN) if isinstance(name, str) else "kwargs")
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


