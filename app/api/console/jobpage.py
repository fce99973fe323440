"""The console's Job page: why it waits, its details, parameters (redacted), result, every event
of its history, the before and after of each retry on corrected parameters, a broadcast's
children, and the actions its state allows (through app.api.jobactions, as the API's routes)."""

from __future__ import annotations

import json
from typing import Any

from app.api import jobactions, schemas
from app.api.console.render import (
    as_json,
    before_after,
    corrections,
    csrf_field,
    duration,
    e,
    event_detail,
    page,
    status,
    when,
)
from app.api.console.session import Viewer
from app.core import tracing
from app.core.redaction import REDACTED, is_secret_field
from app.intake.waiting import why_waiting
from app.store import db, reads
from app.store.models import FINISHED_STATUSES

CHILDREN_SHOWN = 100


def restore_secrets(given: dict[str, Any], stored: Any, secret: tuple[str, ...]) -> dict[str, Any]:
    """Corrected parameters as typed over the redacted ones: a secret field left as ``***``
    keeps its stored value (the form never shows it)."""
    if not isinstance(stored, dict):
        return given
    return {k: stored[k] if v == REDACTED and k in stored and is_secret_field(k, secret) else v
            for k, v in given.items()}


def _details(job: dict[str, Any]) -> str:
    rows = [
        ("academy", e(job.get("tenant_name") or job["tenant_id"])
         + (f' <span class="st st-held">{e(job["tenant_status"])}</span>'
            if job.get("tenant_status") not in (None, "active") else "")),
        ("intent", f'<a href="/ui/jobs?intent={e(job["intent_key"])}">{e(job["intent_key"])}</a>'),
        ("queue", e(job["queue"])),
        ("source", e(job["source"])),
        ("asked by", e(job.get("requested_by"))),
        ("created", when(job["created_at"])),
        ("due", when(job["run_at"])),
        ("handed to broker", when(job["published_at"])),
        ("started", when(job["executed_at"])),
        ("finished", when(job["completed_at"])),
        ("took", duration(job["executed_at"], job["completed_at"])),
        ("worker", e(job["worker"])),
        ("retries", e(f"{job['retry_count']} of {job['max_retries']}")),
        ("idempotency key", e(job["idempotency_key"])),
        ("parent", f'<a href="/ui/jobs/{e(job["parent_id"])}">{e(job["parent_id"])}</a>'
         if job["parent_id"] else ""),
        ("trace", _trace(job.get("traceparent"))),
    ]
    cells = "".join(f"<tr><th>{label}</th><td>{value}</td></tr>" for label, value in rows if value)
    return f'<table class="details">{cells}</table>'


def _trace(traceparent: str | None) -> str:
    """The job's trace id, a link to it where JOBQ_TRACE_URL says where traces are shown."""
    trace_id = tracing.trace_id_of(traceparent)
    if trace_id is None:
        return ""
    link = tracing.trace_link(traceparent)
    code = f'<code class="trace">{e(trace_id)}</code>'
    return f'<a href="{e(link)}" rel="noopener" target="_blank">{code}</a>' if link else code


def _timeline(events: list[dict[str, Any]]) -> str:
    rows = "".join(
        f'<tr class="ev-{e(ev["kind"])}"><td>{when(ev["at"])}</td><td>{ev["attempt"] or ""}</td>'
        f'<td><span class="ev">{e(ev["kind"])}</span></td><td class=opt>{e(ev["worker"])}</td>'
        f"<td>{event_detail(ev)}</td></tr>" for ev in events)
    return ('<div class="scroll"><table class="timeline"><thead><tr><th>at</th><th>attempt</th>'
            '<th>event</th><th class=opt>worker</th><th>detail</th></tr></thead>'
            f"<tbody>{rows}</tbody></table></div>")


def _children(rows: list[dict[str, Any]], counts: dict[str, int]) -> str:
    if not counts:
        return ""
    total = sum(counts.values())
    summary = ", ".join(f"{n:,} {s.replace('_', ' ')}" for s, n in counts.items())
    items = "".join(
        f'<tr><td><a class="id" href="/ui/jobs/{e(c["id"])}">{e(c["id"][:8])}</a></td>'
        f'<td>{e(c["intent_key"])}</td><td>{status(c)}</td>'
        f'<td class="note">{e(schemas.state_out(c)["error_message"])}</td></tr>' for c in rows)
    more = f"<p>{total - len(rows):,} more not shown</p>" if total > len(rows) else ""
    return (f'<section><h2>Children <small>{total:,}: {e(summary)}</small></h2>'
            f'<div class="scroll"><table class="children"><tbody>{items}</tbody></table></div>'
            f"{more}</section>")


def live_part(viewer: Viewer, job_id: str) -> tuple[str, bool]:
    """The part of the page that changes while the job runs, and whether it has ended."""
    job = jobactions.find_row(viewer.tenant_id, job_id)
    secret = schemas.secret_fields(job["intent_key"])
    with db.begin(viewer.tenant_id) as conn:
        events = [schemas.event_out(ev, secret) for ev in reads.job_events(conn, job["id"])]
        children, counts = reads.children_page(conn, job["id"], limit=CHILDREN_SHOWN)
    shown = schemas.job_out(job)
    waiting = why_waiting(job["id"], wait=False) if job["status"] in ("pending", "awaiting_approval") else []
    why = ""
    if waiting:
        items = "".join(f'<li data-code="{e(r.code)}">{e(r.text)}</li>' for r in waiting)
        why = f'<section class="why"><h2>Why is it waiting?</h2><ul>{items}</ul></section>'
    progress = ""
    if job["status"] == "processing" and isinstance(shown.get("progress"), dict):
        percent = shown["progress"].get("percent")
        if isinstance(percent, int | float):
            progress = (f'<progress max="100" value="{percent:.0f}"></progress> '
                        f'{percent:.0f}% {e(shown["progress"].get("message"))}')
    result = f"<h2>Result</h2>{as_json(shown['result'])}" if shown["result"] is not None else ""
    error = (f'<h2>Error</h2><pre class="err">{e(shown["error_message"])}</pre>'
             if shown["error_message"] else "")
    params = ('<p class="msg">Not kept (refused before they could be stored)</p>'
              if job.get("params_dropped") else as_json(shown["intent_params"]))
    fixes = "".join(
        f'<h3>{e(at)} by {e(detail.get("by"))}</h3>{before_after(old, new)}'
        for at, detail, old, new in corrections(events))
    fixes = f'<section><h2>Corrected parameters</h2>{fixes}</section>' if fixes else ""
    html = (f'<p class="state">{status(job)} {progress}</p>{why}'
            f'<div class="cols"><section><h2>Details</h2>{_details(job)}</section>'
            f'<section><h2>Parameters</h2>{params}{result}{error}</section></div>{fixes}'
            f'<section><h2>Timeline</h2>{_timeline(events)}</section>'
            f"{_children(children, counts)}")
    return html, job["status"] in FINISHED_STATUSES


def _actions(viewer: Viewer, job: dict[str, Any], params_text: str) -> str:
    forms = []
    action = f"/ui/jobs/{e(job['id'])}"
    token = csrf_field(viewer)
    if viewer.may("jobs:write") and job["status"] in ("pending", "processing",
                                                      "awaiting_approval"):
        forms.append(f'<form method="post" action="{action}/cancel">{token}'
                     '<input name="reason" placeholder="reason" maxlength="500">'
                     '<button class="cancel">Cancel job</button></form>')
    if viewer.may("jobs:approve") and job["status"] == "awaiting_approval":
        for verb in ("approve", "reject"):
            forms.append(f'<form method="post" action="{action}/{verb}">{token}'
                         '<input name="note" placeholder="note" maxlength="500">'
                         f'<button class="{verb}">{verb.capitalize()}</button></form>')
    if viewer.may("jobs:write") and job["status"] in ("failed", "cancelled"):
        forms.append(f'<form method="post" action="{action}/retry">{token}'
                     '<button class="retry">Retry as it was</button></form>')
        forms.append(
            f'<form method="post" action="{action}/retry" class="params">{token}'
            '<label>Corrected parameters (JSON; a secret left as *** keeps its value)'
            f'<textarea name="params" rows="6" spellcheck="false">{e(params_text)}</textarea>'
            '</label><button class="retry" name="corrected" value="1">Retry with these '
            'parameters</button></form>')
    if not forms:
        return ""
    return f'<section class="actions"><h2>Actions</h2>{"".join(forms)}</section>'


def job_page(viewer: Viewer, job_id: str, *, done: str = "", error: str = "",
             params_text: str | None = None) -> str:
    job = jobactions.find_row(viewer.tenant_id, job_id)
    live, ended = live_part(viewer, job["id"])
    shown = schemas.job_out(job)
    if params_text is None:
        params_text = json.dumps(shown["intent_params"] or {}, ensure_ascii=False, indent=2)
    note = (f'<p class="msg msg-ok" role="status">{e(done)}</p>' if done else "") + \
           (f'<p class="msg msg-error" role="alert">{e(error)}</p>' if error else "")
    body = (f'<h1><span class="id">{e(job["id"])}</span> <small>{e(job["intent_key"])}</small>'
            f'</h1>{note}<section id="live">{live}</section>{_actions(viewer, job, params_text)}')
    return page(f"Job {job['id'][:8]}", viewer, body, active="jobs",
                live=None if ended else f"/ui/jobs/{job['id']}?fragment=1")
