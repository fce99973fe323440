"""Parsing what people type: durations, windows, parameters, job ids and tenants.

Every malformed value becomes a :class:`typer.BadParameter`, which the command line prints as
one line and exits 2 on. A well-formed reference to something that does not exist (a job id)
is the command's own failure, exit 1.
"""

from __future__ import annotations

import datetime as dt
import getpass
import json
import re
import socket
import uuid
from typing import Any
from zoneinfo import ZoneInfo

import typer

_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)", re.IGNORECASE)
_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
#: The longest window --since reaches back: a hundred years, all of any job's history.
MAX_SINCE_SECONDS = 36500 * 86400
#: The shortest id prefix a job can be named by (Flower and ``jobq jobs`` show 8).
MIN_ID_PREFIX = 6


def bad(message: str, param: str | None = None) -> typer.BadParameter:
    return typer.BadParameter(message, param_hint=f"'{param}'" if param else None)


def parse_duration(value: str, param: str) -> float:
    """``90s``, ``15m``, ``1h30m``, ``2d``, ``1w`` or a plain number of seconds."""
    raw = value.strip()
    try:
        seconds = float(raw)
    except ValueError:
        parts = _DURATION.findall(raw)
        if not parts or _DURATION.sub("", raw).strip():
            raise bad(f"{value!r} is not a duration (use e.g. 90s, 15m, 1h, 2d)", param) from None
        seconds = sum(float(n) * _UNITS[unit.lower()] for n, unit in parts)
    if seconds <= 0:
        raise bad(f"{value!r} must be longer than zero", param)
    return seconds


def _local_zone() -> ZoneInfo:
    from app.core.settings import settings

    return ZoneInfo(settings.timezone)


def parse_since(value: str | None, param: str = "--since") -> tuple[float | None, dt.datetime | None]:
    """A window (``1h``: the last hour) or a start (``2026-11-01`` / an ISO time, local if naive)."""
    if value is None:
        return None, None
    if _DURATION.match(value.strip()) or value.strip().replace(".", "", 1).isdigit():
        seconds = parse_duration(value, param)
        if seconds > MAX_SINCE_SECONDS:  # beyond the database's time range: an SQL error
            raise bad(f"{value!r} reaches back more than 36500 days; leave {param} out for all",
                      param)
        return seconds, None
    try:
        at = dt.datetime.fromisoformat(value.strip())
    except ValueError:
        raise bad(
            f"{value!r} is neither a duration (1h, 2d) nor a time (2026-11-01T09:00)", param
        ) from None
    if at.tzinfo is None:
        at = at.replace(tzinfo=_local_zone())
    return None, at


def parse_run_at(value: str | None) -> str | None:
    """``+10m`` / ``in 10m`` become an absolute time; anything else goes to dispatch as given."""
    if value is None:
        return None
    raw = value.strip()
    relative = raw[1:] if raw.startswith("+") else raw[3:] if raw.lower().startswith("in ") else None
    if relative is None:
        return raw
    seconds = parse_duration(relative, "--run-at")
    return (dt.datetime.now(dt.UTC) + dt.timedelta(seconds=seconds)).isoformat()


def _wants_string(schema: dict[str, Any] | None) -> bool:
    """True when a parameter's JSON schema takes only strings (so ``010`` stays ``"010"``)."""
    if not schema:
        return False
    if "anyOf" in schema:
        kinds = {s.get("type") for s in schema["anyOf"]} - {"null"}
        return kinds == {"string"}
    return schema.get("type") == "string"


def parse_params(pairs: list[str], params_json: str | None,
                 schema: dict[str, Any] | None) -> dict[str, Any]:
    """``--params-json`` first, then each ``--param k=v`` over it.

    A value is JSON when it parses as JSON (``3``, ``true``, ``[1, 2]``) unless the intent's
    parameter schema says the field is text; then it is kept exactly as typed.
    """
    params: dict[str, Any] = {}
    if params_json is not None:
        try:
            loaded = json.loads(params_json)
        except ValueError as exc:
            raise bad(f"not JSON: {exc}", "--params-json") from None
        if not isinstance(loaded, dict):
            raise bad(f"must be a JSON object, not {type(loaded).__name__}", "--params-json")
        params.update(loaded)
    properties = (schema or {}).get("properties", {})
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        key = key.strip()
        if not sep or not key:
            raise bad(f"{pair!r} is not key=value", "--param")
        if _wants_string(properties.get(key)):
            params[key] = raw
            continue
        try:
            params[key] = json.loads(raw)
        except ValueError:
            params[key] = raw
    return params


def id_range(ref: str) -> tuple[str, str]:
    """The ids a full id or an id prefix can name, as ``(lowest, highest)``."""
    hexes = ref.strip().lower().replace("-", "")
    if not re.fullmatch(r"[0-9a-f]+", hexes or "-") or len(hexes) > 32:
        raise bad(f"{ref!r} is not a job id", "ID")
    if len(hexes) < MIN_ID_PREFIX:
        raise bad(f"{ref!r} is too short: give at least {MIN_ID_PREFIX} characters of a job id", "ID")

    def as_uuid(fill: str) -> str:
        return str(uuid.UUID(hexes + fill * (32 - len(hexes))))

    return as_uuid("0"), as_uuid("f")




def actor() -> str:
    """Who did it, for the audit trail: ``cli:user@host``."""
    try:
        user = getpass.getuser()
    except Exception:  # no passwd entry in some containers
        user = "unknown"
    return f"cli:{user}@{socket.gethostname()}"
