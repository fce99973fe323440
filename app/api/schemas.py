"""What the API's requests and answers look like (and what its OpenAPI document says)."""

from __future__ import annotations

import base64
import datetime as dt
import json
import re
from dataclasses import dataclass
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StrictBool, WithJsonSchema

from app.core.redaction import redact, redact_params
from app.core.registry import manifest

# The request's fields are checked by jobq's own validation (as for dispatch_intent), so a bad
# value is refused with the same message and leaves its failed row; the schema documents them.
_AnyString = Annotated[Any, WithJsonSchema({"type": "string"})]
_AnyObject = Annotated[Any, WithJsonSchema({"type": "object", "additionalProperties": True})]
_AnyTime = Annotated[Any, WithJsonSchema({"type": "string", "format": "date-time"})]
_AnyInt = Annotated[Any, WithJsonSchema({"type": "integer", "minimum": 0})]


class JobRequest(BaseModel):
    """A job asked for: as ``dispatch_intent`` takes it."""

    model_config = ConfigDict(extra="forbid")

    intent_key: _AnyString = Field(
        description="The intent, e.g. attendance.exec.notify_guardians_late (GET /v1/intents)")
    intent_params: _AnyObject = Field(
        default=None, description="The intent's parameters, as its JSON schema says")
    run_at: _AnyTime = Field(
        default=None, description="Not before this time (ISO 8601; without an offset: the "
                                  "academies' zone)")
    max_retries: _AnyInt = Field(default=None, description="Default: the intent's")
    requires_approval: StrictBool = Field(
        default=False, description="Wait in awaiting_approval until someone approves it")


class CancelRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reason: str | None = Field(default=None, max_length=500)


class RetryRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    intent_params: dict[str, Any] | None = Field(
        default=None, description="Run it on these corrected parameters (audited)")


class ChannelLimits(BaseModel):
    """An academy's own caps on an outside channel; a field left out keeps its value, 0 removes
    a cap."""

    model_config = ConfigDict(extra="forbid")
    rate: float | None = Field(None, ge=0, description="messages per second at most (0: no cap)")
    daily: int | None = Field(None, ge=0, description="messages per Korean day (0: no cap)")
    over_daily: str | None = Field(None, pattern="^(wait|fail)$",
                                   description="what would go over the day's quota: wait for "
                                               "the next day, or fail with the reason")


class ChannelLimitsOut(BaseModel):
    tenant_id: str
    channel: str
    rate: float | None
    daily: int | None
    over_daily: str


class ApproveRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    note: str | None = Field(default=None, max_length=500)


class RejectRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reason: str | None = Field(default=None, max_length=500)


class Job(BaseModel):
    id: str
    tenant_id: str
    intent_key: str
    intent_params: Any = None
    status: str = Field(description="pending, processing, completed, failed, cancelled or "
                                    "awaiting_approval")
    retry_count: int
    max_retries: int | None
    created_at: dt.datetime | None
    run_at: dt.datetime | None
    executed_at: dt.datetime | None
    completed_at: dt.datetime | None
    error_message: str | None
    result: Any = None
    progress: Any = None
    queue: str | None
    requested_by: str | None
    approval_expires_at: dt.datetime | None
    idempotency_key: str | None
    parent_id: str | None


class JobEvent(BaseModel):
    id: int
    at: dt.datetime
    attempt: int
    kind: str = Field(description="created, refused, started, completed, retry, failed, lost, "
                                  "cancelled, stopped, requeued, held, approved, rejected, "
                                  "expired")
    worker: str | None
    error: str | None
    detail: Any = None


class WaitReason(BaseModel):
    code: str = Field(description="awaiting_approval, academy_suspended, run_at_future, "
                                  "waiting_for, handed_to_worker, academy_at_cap, "
                                  "behind_in_fair_order, no_worker, unrouted or next")
    text: str


class JobWithHistory(Job):
    events: list[JobEvent]
    waiting: list[WaitReason] = Field(
        default=[], description="Why a pending or unapproved job has not started (empty for "
                                "others)")


class JobPage(BaseModel):
    jobs: list[Job]
    next_cursor: str | None = Field(description="Pass as ?cursor= for the next page; null at "
                                                "the end")


class IntentInfo(BaseModel):
    key: str
    description: str
    queue: str
    requires_approval: bool
    max_retries: int
    params_schema: dict[str, Any]


class Problem(BaseModel):
    error: str
    field: str | None = None
    job_id: str | None = Field(default=None, description="The failed row kept for the audit "
                               "(422); the job an Idempotency-Key names (409)")


def secret_fields(intent_key: str | None) -> tuple[str, ...]:
    """The parameter fields ``intent_key`` declares secret (hidden wherever they show)."""
    intent = manifest.get(intent_key) if intent_key else None
    return tuple(intent.secret_params) if intent else ()


# What a job shows over the API, redacted as Flower and the command line show it: its declared
# secret fields and secret-looking keys as ***, wherever they sit in parameters, result,
# progress or an event's detail, and passwords inside any text.

def state_out(row: dict[str, Any], secret: tuple[str, ...] = ()) -> dict[str, Any]:
    """``row`` with its result, progress and error message redacted."""
    out = dict(row)
    for name in ("result", "progress"):
        if name in out:
            out[name] = redact_params(out[name], secret)
    if "error_message" in out:
        out["error_message"] = redact(out["error_message"])
    return out


def job_out(row: dict[str, Any]) -> dict[str, Any]:
    secret = secret_fields(row["intent_key"])
    out = state_out({name: row.get(name) for name in Job.model_fields}, secret)
    out["intent_params"] = redact_params(row.get("intent_params"), secret)
    return out


def event_out(row: dict[str, Any], secret: tuple[str, ...] = ()) -> dict[str, Any]:
    out = {name: row.get(name) for name in JobEvent.model_fields}
    out["detail"] = redact_params(out["detail"], secret)
    out["error"] = redact(out["error"])
    return out


def encode_cursor(row: dict[str, Any]) -> str:
    raw = json.dumps([row["created_at"].isoformat(), row["id"]]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[dt.datetime, str]:
    """Raises ValueError for a cursor this API did not make."""
    import uuid

    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        at, job_id = json.loads(raw)
        return dt.datetime.fromisoformat(at), str(uuid.UUID(job_id))
    except Exception as exc:
        raise ValueError("malformed cursor: pass next_cursor of the previous page") from exc


_SINCE = re.compile(r"^(\d+(?:\.\d+)?)\s*([smhd])$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
#: The longest window ``since`` reaches back (a longer one would leave the database's time
#: range): a hundred years, all of any job's history.
MAX_SINCE_SECONDS = 36500 * 86400
#: The longest ``intent`` filter: an intent key is far shorter.
MAX_INTENT_FILTER = 200


def parse_since(value: str, name: str = "since") -> tuple[float | None, dt.datetime | None]:
    """``1h``, ``30m``, ``7d`` (that long back from now) or an ISO 8601 time. A ValueError
    names the parameter (``name``) and what it takes."""
    found = _SINCE.match(value.strip())
    if found:
        seconds = float(found.group(1)) * _UNITS[found.group(2)]
        if not 0 < seconds <= MAX_SINCE_SECONDS:
            raise ValueError(f"{name}={value[:40]!r}: a window must be longer than zero and at "
                             f"most 36500d; for all jobs leave {name} out")
        return seconds, None
    try:
        at = dt.datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(f"{name}={value[:40]!r}: use 30m, 1h, 7d or an ISO 8601 time") from None
    if at.tzinfo is None:
        from zoneinfo import ZoneInfo

        from app.core.settings import settings

        at = at.replace(tzinfo=ZoneInfo(settings.timezone))
    return None, at


@dataclass(frozen=True)
class Window:
    """Jobs created since one time and before another (either end open)."""

    since_seconds: float | None = None
    since_at: dt.datetime | None = None
    until_seconds: float | None = None
    until_at: dt.datetime | None = None


def parse_window(since: str | None, until: str | None) -> Window:
    """``since`` and ``until``, each as :func:`parse_since` takes it (``until=1h``: created more
    than an hour ago). A ValueError names the bad one (its message starts with its name), or
    says that ``until`` is not after ``since``."""
    start = parse_since(since, "since") if since else (None, None)
    end = parse_since(until, "until") if until else (None, None)
    if since and until:
        now = dt.datetime.now(dt.UTC)
        lo = start[1] or now - dt.timedelta(seconds=start[0] or 0)
        hi = end[1] or now - dt.timedelta(seconds=end[0] or 0)
        if hi <= lo:
            raise ValueError(f"until={until[:40]!r} is not after since={since[:40]!r}: no job "
                             "is created in that window")
    return Window(*start, *end)


def window_field(refused: ValueError) -> str:
    """The parameter a :func:`parse_window` refusal names."""
    return "until" if str(refused).startswith("until") else "since"


def is_intent_filter(value: str) -> bool:
    """An intent key or a family (``billing.*``): printable, and not longer than any key."""
    return 0 < len(value) <= MAX_INTENT_FILTER and value.isprintable()
