"""How jobs look in the terminal: local times, durations, coloured states, progress, and
parameters with their secrets hidden.

Times are shown in the academies' time zone (``JOBQ_TIMEZONE``), since that is the clock the
people reading them live by.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any
from zoneinfo import ZoneInfo

from rich.text import Text

from app.core.redaction import redact, redact_params

STATUS_STYLES = {
    "pending": "yellow",
    "processing": "bold cyan",
    "completed": "green",
    "failed": "bold red",
    "cancelled": "magenta",
    "awaiting_approval": "bold yellow",
}
EVENT_STYLES = {
    "created": "dim",
    "requeued": "yellow",
    "started": "cyan",
    "completed": "green",
    "retry": "yellow",
    "failed": "bold red",
    "refused": "bold red",
    "held": "yellow",
    "waiting": "yellow",
    "throttled": "yellow",
    "lost": "red",
    "cancelled": "magenta",
    "stopped": "magenta",
    "approved": "green",
    "rejected": "magenta",
    "expired": "magenta",
}


def _zone() -> ZoneInfo:
    from app.core.settings import settings

    return ZoneInfo(settings.timezone)


def local_time(value: dt.datetime | None, *, date: bool = True, short: bool = False,
               zone: bool = True) -> str:
    """``2026-11-26 09:05:00 KST`` in the academies' zone, the zone the logs use too;
    ``short`` drops the year, and table cells (whose header names the zone) drop the zone."""
    if value is None:
        return "-"
    local = value.astimezone(_zone())
    if not date:
        return local.strftime("%H:%M:%S")
    if short:
        return local.strftime("%m-%d %H:%M:%S")
    return local.strftime("%Y-%m-%d %H:%M:%S" + (" %Z" if zone else ""))


def print_whole(console, renderable, *, wide: bool = False) -> None:
    """Print a table without cutting anything short when it goes to a pipe (or ``--wide``):
    a script reading it gets whole ids and names, however wide the lines come out."""
    if wide or not console.is_terminal:
        from rich.console import Console

        # Rich lays a table out to the console's width: a console as wide as the table needs.
        unbounded = Console(file=console.file, width=100_000, color_system=console.color_system,
                            force_terminal=console.is_terminal)
        unbounded.print(renderable)
    else:
        console.print(renderable)


def zone_name() -> str:
    """The academies' zone as table headers name it (``KST``)."""
    return dt.datetime.now(_zone()).strftime("%Z")


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes}m {secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m"


def between(start: dt.datetime | None, end: dt.datetime | None) -> float | None:
    return (end - start).total_seconds() if start and end else None


def status(value: str | None) -> Text:
    return Text(value or "-", style=STATUS_STYLES.get(value or "", ""))


def is_held(job: dict[str, Any]) -> bool:
    """A pending job of a suspended tenant: it does not run until the tenant is resumed."""
    return job.get("status") == "pending" and job.get("tenant_status") == "suspended"


def job_status(job: dict[str, Any]) -> Text:
    """A job's state as people read it: a held job says so rather than ``pending``."""
    return Text("held", style="bold yellow") if is_held(job) else status(job["status"])


def resume_hint(job: dict[str, Any]) -> str:
    return f"jobq tenants resume {job['tenant_id'][:8]}"


def event_kind(value: str) -> Text:
    return Text(value, style=EVENT_STYLES.get(value, ""))


def progress_line(progress: dict[str, Any] | None) -> str:
    """``40% (2/5) sending`` from a job's ``progress`` column."""
    if not progress:
        return ""
    parts = []
    if progress.get("percent") is not None:
        parts.append(f"{progress['percent']:.0f}%")
    if progress.get("total") is not None:
        parts.append(f"({_number(progress.get('done'))}/{_number(progress['total'])})")
    elif progress.get("done") is not None:
        parts.append(f"{_number(progress['done'])} done")
    if progress.get("message"):
        parts.append(str(progress["message"]))
    return " ".join(parts)


def _number(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.0f}" if value.is_integer() or value >= 10 else f"{value:.1f}"
    return str(value)


def shown_params(intent_key: str, params: Any) -> Any:
    """``params`` with the intent's declared secret fields and secret-looking keys hidden, and
    passwords inside any text value (a URL typed into the wrong field) masked too."""
    from app.core.registry import manifest

    intent = manifest.get(intent_key)
    return redact_values(redact_params(params, intent.secret_params if intent else ()))


def redact_values(value: Any) -> Any:
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {k: redact_values(v) for k, v in value.items()}
    if isinstance(value, list):
        return [redact_values(v) for v in value]
    return value


def shown_str(value: str | None) -> str:
    return redact(value) or ""


def as_json(value: Any, *, indent: int | None = None) -> str:
    return json.dumps(value, ensure_ascii=False, default=str, indent=indent)


def short(value: Any, width: int) -> str:
    """``value`` on one line (JSON unless text), cut to ``width`` terminal cells."""
    text_ = value if isinstance(value, str) else as_json(value)
    text_ = " ".join(text_.split())
    line = Text(text_)
    if line.cell_len <= width:
        return text_
    line.truncate(width, overflow="ellipsis")
    return line.plain


def job_for_json(job: dict[str, Any]) -> dict[str, Any]:
    """A job row as scripts get it from ``--json``: secrets hidden, times in ISO 8601."""
    out = dict(job)
    if "tenant_status" in job:
        out["held"] = is_held(job)
    out["intent_params"] = shown_params(job["intent_key"], job.get("intent_params"))
    # A result may echo the parameters: the intent's declared secrets are hidden there too.
    out["result"] = shown_params(job["intent_key"], job.get("result"))
    if out.get("error_message"):
        out["error_message"] = shown_str(out["error_message"])
    for key, value in out.items():
        if isinstance(value, dt.datetime):
            out[key] = value.isoformat()
    return out


def event_detail(event: dict[str, Any], intent_key: str | None = None) -> Text:
    """One line on what an event means: the error, the delay, who did it, what changed."""
    detail = event.get("detail") or {}
    kind = event["kind"]
    out = Text()
    if kind == "created" and detail.get("source"):
        out.append(f"via {detail['source']}")
        if detail.get("by"):
            out.append(f" by {detail['by']}")
        if detail.get("run_at"):
            out.append(f", due {local_time(_parse(detail['run_at']))}")
        if detail.get("awaiting_approval"):
            expires = _parse(detail.get("approval_expires_at"))
            out.append(", awaiting approval" + (f" until {local_time(expires)}" if expires else ""),
                       style="yellow")
    elif kind == "completed" and detail.get("elapsed_ms") is not None:
        out.append(f"in {duration(detail['elapsed_ms'] / 1000)}")
    elif kind == "retry":
        if detail.get("delay_seconds") is not None:
            out.append(f"again in {duration(detail['delay_seconds'])}: ", style="yellow")
    elif kind in ("approved", "rejected", "expired"):
        if detail.get("by"):
            out.append(f"by {detail['by']}")
        if detail.get("note"):
            out.append(f": {shown_str(detail['note'])}")
        if kind == "rejected" and event.get("error"):
            out.append(": ")
    elif kind in ("cancelled", "requeued"):
        if detail.get("by"):
            out.append(f"by {detail['by']}")
        if detail.get("was"):
            out.append(f" (was {detail['was']})")
        if isinstance(detail.get("params"), dict):  # a retry on corrected parameters
            params = detail["params"]
            old, new = (as_json(shown_params(intent_key or "", params.get(k)))
                        for k in ("old", "new"))
            out.append(f", parameters {old} → {new}", style="yellow")
    elif kind == "stopped":
        ran = detail.get("ran_ms")
        how = "interrupted" if detail.get("interrupted") else "finished first"
        out.append(f"run {how}" + (f" after {duration(ran / 1000)}" if ran is not None else ""))
        out.append(f" (job {detail.get('reason', 'cancelled')}), its work rolled back")
    elif kind == "refused" and detail.get("by"):
        out.append(f"by {detail['by']}: ")
    elif kind == "throttled":  # a wait for a shared outside channel's rate
        reasons = ", ".join(f"{k} {duration(v)}" for k, v in (detail.get("by_reason") or {}).items())
        out.append(f"waited {duration(detail.get('waited_s') or 0)} for {detail.get('channel')} "
                   f"({detail.get('rate', 0):g}/s, this academy's share "
                   f"{detail.get('share', 0):g}/s of {detail.get('academies_sending', 1)} "
                   f"sending; {reasons})", style="yellow")
    if event.get("error"):
        if kind == "cancelled":
            out.append(f": {shown_str(event['error'])}")
        elif kind in ("held", "waiting"):  # not an error: the job waits for something
            out.append(shown_str(event["error"]), style="yellow")
        else:
            out.append(shown_str(event["error"]), style="red")
    return out


def _parse(value: Any) -> dt.datetime | None:
    if isinstance(value, dt.datetime):
        return value
    try:
        return dt.datetime.fromisoformat(str(value))
    except ValueError:
        return None
