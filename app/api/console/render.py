"""The console's HTML: one layout, escaped values, times in the academies' zone, statuses,
JSON blocks, and what each history event means. Plain server-rendered pages: the stylesheet and
the small script ship in the package (app/api/console/static), nothing comes from a CDN."""

from __future__ import annotations

import datetime as dt
import html
import json
from typing import Any
from urllib.parse import urlencode
from zoneinfo import ZoneInfo

from app.api.console.session import Viewer, csrf_token
from app.core.settings import settings

NAV = (("jobs", "/ui/jobs", "Jobs"), ("approvals", "/ui/approvals", "Approvals"))
#: Pages only an operator's session sees: they span academies.
OPERATOR_NAV = (("academies", "/ui/academies", "Academies"), ("queues", "/ui/queues", "Queues"),
                ("channels", "/ui/channels", "Channels"))


def e(value: Any) -> str:
    """``value`` as HTML text (None: empty)."""
    return "" if value is None else html.escape(str(value), quote=True)


def url(path: str, **query: Any) -> str:
    shown = {k: v for k, v in query.items() if v not in (None, "", [])}
    return path + ("?" + urlencode(shown, doseq=True) if shown else "")


def local(value: dt.datetime | None, *, seconds: bool = True) -> str:
    if value is None:
        return ""
    shown = value.astimezone(ZoneInfo(settings.timezone))
    return shown.strftime("%Y-%m-%d %H:%M:%S" if seconds else "%m-%d %H:%M")


def when(value: dt.datetime | None) -> str:
    """A ``<time>`` element: the local time, the ISO time in its title."""
    if value is None:
        return ""
    return f'<time datetime="{e(value.isoformat())}" title="{e(value.isoformat())}">' \
           f"{e(local(value))}</time>"


def duration(start: dt.datetime | None, end: dt.datetime | None) -> str:
    if start is None or end is None:
        return ""
    seconds = (end - start).total_seconds()
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 60:
        return f"{seconds:.1f} s"
    return f"{int(seconds) // 60}m {int(seconds) % 60:02d}s"


def status(job: dict[str, Any]) -> str:
    value = job["status"]
    if value == "pending" and job.get("tenant_status") == "suspended":
        return '<span class="st st-held">held</span>'
    return f'<span class="st st-{e(value)}">{e(value.replace("_", " "))}</span>'


def as_json(value: Any) -> str:
    return f'<pre class="json">{e(json.dumps(value, ensure_ascii=False, indent=2, default=str))}</pre>'


def csrf_field(viewer: Viewer) -> str:
    return f'<input type="hidden" name="csrf" value="{e(csrf_token(viewer))}">'


def page(title: str, viewer: Viewer | None, body: str, *, active: str = "",
         live: str | None = None) -> str:
    """A whole page. ``live``: the URL the page's live part is read again from."""
    nav = ""
    if viewer is not None:
        links = "".join(f'<a href="{href}"{" class=on" if key == active else ""}>{label}</a>'
                        for key, href, label in NAV + (OPERATOR_NAV if viewer.operator else ()))
        who = "operator: every academy" if viewer.operator else "one academy"
        nav = (f'<nav>{links}<span class="who">{e(viewer.name)} <small>({who})</small></span>'
               f'<form method="post" action="/ui/logout">{csrf_field(viewer)}'
               f'<button class="link">Log out</button></form></nav>')
    live_attr = f' data-live="{e(live)}"' if live else ""
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{e(title)} · jobq</title>
<link rel="stylesheet" href="/ui/static/console.css">
<script src="/ui/static/console.js" defer></script>
</head><body{live_attr}>
<header><a class="brand" href="/ui/jobs">jobq</a>{nav}</header>
<main>{body}</main>
</body></html>"""


def message(kind: str, text: str) -> str:
    return f'<p class="msg msg-{e(kind)}" role="status">{e(text)}</p>' if text else ""


def event_detail(event: dict[str, Any]) -> str:
    """What an event of a job's history means, in one line of HTML (already redacted)."""
    detail = event.get("detail") or {}
    kind = event["kind"]
    parts: list[str] = []
    if kind == "created" and detail.get("source"):
        parts.append(f"via {e(detail['source'])}"
                     + (f" by {e(detail['by'])}" if detail.get("by") else ""))
        if detail.get("run_at"):
            parts.append(f"due {e(detail['run_at'])}")
        if detail.get("awaiting_approval"):
            parts.append("awaiting approval")
    elif kind == "completed" and detail.get("elapsed_ms") is not None:
        parts.append(f"in {detail['elapsed_ms'] / 1000:.1f} s")
    elif kind == "retry" and detail.get("delay_seconds") is not None:
        parts.append(f"again in {detail['delay_seconds']:.0f} s")
    elif kind in ("approved", "rejected", "expired", "cancelled", "requeued", "refused"):
        if detail.get("by"):
            parts.append(f"by <b>{e(detail['by'])}</b>")
        if detail.get("was"):
            parts.append(f"(was {e(detail['was'])})")
        if detail.get("note"):
            parts.append(f"note: “{e(detail['note'])}”")
        if isinstance(detail.get("params"), dict):
            parts.append("on corrected parameters (below)")
    elif kind == "stopped":
        how = "interrupted" if detail.get("interrupted") else "finished first"
        parts.append(f"run {how}, its work rolled back")
    if detail.get("progress") and kind not in ("created",):
        parts.append(e(json.dumps(detail["progress"], ensure_ascii=False)))
    if event.get("error"):
        parts.append(f'<span class="err">{e(event["error"])}</span>')
    return " ".join(parts)


def corrections(events: list[dict[str, Any]]) -> list[tuple[str, dict[str, Any], Any, Any]]:
    """Each retry on corrected parameters: (when, by, before, after), from the history."""
    out = []
    for event in events:
        params = (event.get("detail") or {}).get("params")
        if event["kind"] == "requeued" and isinstance(params, dict):
            out.append((local(event["at"]), event["detail"], params.get("old"), params.get("new")))
    return out


def before_after(old: Any, new: Any) -> str:
    """A table of the fields a correction changed (every field, changed ones marked)."""
    old = old if isinstance(old, dict) else {"": old}
    new = new if isinstance(new, dict) else {"": new}
    rows = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        changed = ' class="changed"' if a != b else ""
        rows.append(f"<tr{changed}><th>{e(key)}</th>"
                    f"<td>{e(json.dumps(a, ensure_ascii=False, default=str))}</td>"
                    f"<td>{e(json.dumps(b, ensure_ascii=False, default=str))}</td></tr>")
    return ('<div class="scroll"><table class="diff"><thead><tr><th>field</th><th>before</th>'
            f'<th>after</th></tr></thead><tbody>{"".join(rows)}</tbody></table></div>')
