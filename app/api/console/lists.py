"""The console's lists: Jobs (filtered, newest first, a cursor page at a time) and Approvals
(what waits for a person, per academy). Each page is one or two indexed statements: keyset
paging on (created_at, id), no count over the table."""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from typing import Any

from app.api import schemas
from app.api.auth import Denied
from app.api.console.render import csrf_field, e, page, status, url, when
from app.api.console.session import Viewer
from app.core.manifest import QUEUES
from app.core.registry import manifest
from app.store import db, reads, tenants
from app.store.models import JOB_STATUSES

PAGE_SIZE = 50
APPROVALS_SHOWN = 200
_HEX = re.compile(r"^[0-9a-f]{8,32}$")


@dataclass(frozen=True)
class JobsQuery:
    """The Jobs page's filters, as its form sends them."""

    academy: str = ""
    intent: str = ""
    status: str = ""
    queue: str = ""
    since: str = ""
    q: str = ""
    cursor: str = ""
    until: str = ""

    def link(self, **change: Any) -> str:
        values = {**self.__dict__, **change}
        return url("/ui/jobs", **values)


def _id_range(q: str) -> tuple[str, str] | None:
    """A job id, or the first 8 or more hex digits of one, as an id range."""
    digits = q.lower().replace("-", "")
    if not _HEX.match(digits):
        return None
    lo, hi = digits.ljust(32, "0"), digits.ljust(32, "f")
    return str(uuid.UUID(lo)), str(uuid.UUID(hi))


def _academy_id(conn, viewer: Viewer, name: str) -> str | None:
    if not viewer.operator:
        return viewer.tenant_id
    if not name:
        return None
    try:
        return str(uuid.UUID(name))
    except ValueError:
        pass
    found = tenants.find_tenants_by_name(conn, name)
    if not found:
        raise Denied(422, f"no academy named {name!r}", field="academy")
    return found[0]["id"]


def find_jobs(viewer: Viewer, query: JobsQuery) -> tuple[list[dict[str, Any]], str | None]:
    """The page of jobs the query asks for, seen as ``viewer``, and the next page's cursor."""
    if query.status and query.status not in JOB_STATUSES:
        raise Denied(422, f"status {query.status!r} is not one of {', '.join(JOB_STATUSES)}",
                     field="status")
    if query.queue and query.queue not in QUEUES:
        raise Denied(422, f"queue {query.queue!r} is not one of {', '.join(QUEUES)}",
                     field="queue")
    if query.intent and not schemas.is_intent_filter(query.intent):
        raise Denied(422, "intent must be an intent key or a family such as billing.*",
                     field="intent")
    try:
        window = schemas.parse_window(query.since, query.until)
    except ValueError as exc:
        raise Denied(422, str(exc), field=schemas.window_field(exc)) from None
    try:
        after = schemas.decode_cursor(query.cursor) if query.cursor else (None, None)
    except ValueError as exc:
        raise Denied(422, str(exc), field="cursor") from None
    with db.begin(viewer.tenant_id) as conn:
        academy = _academy_id(conn, viewer, query.academy.strip())
        q = query.q.strip()
        if q:
            ids = _id_range(q)
            rows = (reads.find_jobs_by_prefix(conn, *ids) if ids else [])
            if not rows:
                rows = reads.find_jobs_by_idempotency_key(conn, q, tenant_id=academy,
                                                          limit=PAGE_SIZE)
            return rows, None
        where = reads.JobFilter(tenant_id=academy, statuses=[query.status] if query.status
                                else None, intent=query.intent or None,
                                since_seconds=window.since_seconds, since_at=window.since_at,
                                until_seconds=window.until_seconds, until_at=window.until_at,
                                queue=query.queue or None)
        rows = reads.list_jobs_after(conn, where, limit=PAGE_SIZE + 1, cursor_at=after[0],
                                     cursor_id=after[1])
    more = len(rows) > PAGE_SIZE
    rows = rows[:PAGE_SIZE]
    return rows, schemas.encode_cursor(rows[-1]) if more else None


def _note(job: dict[str, Any]) -> str:
    if job["status"] == "awaiting_approval":
        return "awaiting approval" + (f" (asked by {job['requested_by']})"
                                      if job.get("requested_by") else "")
    if job.get("tenant_status") == "suspended" and job["status"] == "pending":
        return "academy suspended"
    if job["status"] == "processing" and job.get("progress"):
        percent = (job["progress"] or {}).get("percent")
        return f"{percent:.0f}%" if isinstance(percent, int | float) else ""
    return schemas.state_out({"error_message": job.get("error_message")})["error_message"] or ""


def jobs_table(viewer: Viewer, rows: list[dict[str, Any]]) -> str:
    head = ("<th>job</th><th>created</th>" + ("<th>academy</th>" if viewer.operator else "")
            + "<th>intent</th><th>status</th><th class=opt>queue</th>"
              "<th class=opt>retries</th><th>note</th>")
    body = []
    for job in rows:
        academy = f'<td>{e(job["tenant_name"])}</td>' if viewer.operator else ""
        retries = f"{job['retry_count']}/{job['max_retries'] if job['max_retries'] is not None else '-'}"
        body.append(
            f'<tr data-job="{e(job["id"])}"><td><a class="id" href="/ui/jobs/{e(job["id"])}">'
            f'{e(job["id"][:8])}</a></td><td>{when(job["created_at"])}</td>{academy}'
            f'<td>{e(job["intent_key"])}</td><td>{status(job)}</td>'
            f'<td class=opt>{e(job["queue"])}</td><td class=opt>{e(retries)}</td>'
            f'<td class="note">{e(_note(job))}</td></tr>')
    if not body:
        return '<p class="empty">No jobs match.</p>'
    return (f'<div class="scroll"><table class="jobs"><thead><tr>{head}</tr></thead>'
            f'<tbody>{"".join(body)}</tbody></table></div>')


def _options(values: list[str] | tuple[str, ...], chosen: str, blank: str) -> str:
    out = [f'<option value="">{e(blank)}</option>']
    for value in values:
        on = " selected" if value == chosen else ""
        out.append(f'<option value="{e(value)}"{on}>{e(value.replace("_", " "))}</option>')
    return "".join(out)


def jobs_page(viewer: Viewer, query: JobsQuery, *, fragment: bool = False,
              error: str = "") -> str:
    try:
        rows, cursor = find_jobs(viewer, query)
    except Denied as refused:
        rows, cursor, error = [], None, str(refused)
    older = (f'<a class="older" rel="next" href="{e(query.link(cursor=cursor))}">Older jobs →</a>'
             if cursor else "")
    newest = (f'<a href="{e(query.link(cursor=""))}">← Newest</a>' if query.cursor else "")
    live = (f'{jobs_table(viewer, rows)}<p class="paging">{newest} {older}</p>')
    if fragment:
        return live
    academies = ""
    if viewer.operator:
        with db.begin(None) as conn:
            names = sorted(tenants.tenant_names(conn))
        academies = ('<label>Academy<input name="academy" list="academies" autocomplete="off" '
                     f'value="{e(query.academy)}" placeholder="name"></label>'
                     '<datalist id="academies">'
                     + "".join(f'<option value="{e(n)}">' for n in names) + "</datalist>")
    intents = "".join(f'<option value="{e(i.key)}">' for i in sorted(manifest,
                                                                     key=lambda i: i.key))
    form = f"""<form class="filters" method="get" action="/ui/jobs">
{academies}
<label>Intent<input name="intent" list="intents" value="{e(query.intent)}" placeholder="billing.*"></label>
<datalist id="intents">{intents}</datalist>
<label>Status<select name="status">{_options(JOB_STATUSES, query.status, "any")}</select></label>
<label>Queue<select name="queue">{_options(QUEUES, query.queue, "any")}</select></label>
<label>Since<input name="since" value="{e(query.since)}" placeholder="1h, 7d, 2026-12-01"></label>
<label>Until<input name="until" value="{e(query.until)}" placeholder="30m, 2026-12-02 09:00"></label>
<label>Id or key<input name="q" value="{e(query.q)}" placeholder="job id or idempotency key"></label>
<button>Filter</button> <a href="/ui/jobs">Clear</a>
<label class="check"><input type="checkbox" id="live-toggle"{"" if query.cursor else " checked"}> live</label>
</form>"""
    err = f'<p class="msg msg-error" role="alert">{e(error)}</p>' if error else ""
    body = f'<h1>Jobs</h1>{form}{err}<section id="live">{live}</section>'
    return page("Jobs", viewer, body, active="jobs",
                live=None if query.cursor else query.link(fragment=1))


def approvals_page(viewer: Viewer, *, done: str = "") -> str:
    where = reads.JobFilter(tenant_id=viewer.tenant_id, statuses=["awaiting_approval"])
    with db.begin(viewer.tenant_id) as conn:
        rows = reads.list_jobs_after(conn, where, limit=APPROVALS_SHOWN)
    groups: dict[str, list[dict[str, Any]]] = {}
    for job in rows:
        groups.setdefault(job["tenant_name"] or job["tenant_id"], []).append(job)
    sections = []
    may = viewer.may("jobs:approve")
    for academy in sorted(groups):
        items = []
        for job in groups[academy]:
            shown = schemas.job_out(job)
            forms = ""
            if may:
                forms = "".join(
                    f'<form method="post" action="/ui/jobs/{e(job["id"])}/{verb}" class="inline">'
                    f'{csrf_field(viewer)}<input name="note" placeholder="note" maxlength="500">'
                    f'<button class="{verb}">{verb.capitalize()}</button></form>'
                    for verb in ("approve", "reject"))
            expires = f" · expires {when(job['approval_expires_at'])}" \
                if job.get("approval_expires_at") else ""
            items.append(
                f'<li data-job="{e(job["id"])}"><a class="id" href="/ui/jobs/{e(job["id"])}">'
                f'{e(job["id"][:8])}</a> <b>{e(job["intent_key"])}</b> '
                f'<small>asked by {e(job.get("requested_by") or "?")} · {when(job["created_at"])}'
                f'{expires}</small><code class="params">{e(shown["intent_params"])}</code>'
                f'{forms}</li>')
        sections.append(f'<section class="academy"><h2>{e(academy)} '
                        f'<small>{len(groups[academy])} waiting</small></h2>'
                        f'<ul class="approvals">{"".join(items)}</ul></section>')
    more = (f'<p class="msg">Showing the newest {APPROVALS_SHOWN}: '
            f'<a href="/ui/jobs?status=awaiting_approval">all of them</a></p>'
            if len(rows) == APPROVALS_SHOWN else "")
    empty = "" if rows else '<p class="empty">Nothing waits for approval.</p>'
    note = f'<p class="msg msg-ok" role="status">{e(done)}</p>' if done else ""
    return page("Approvals", viewer, f"<h1>Approvals</h1>{note}{empty}{''.join(sections)}{more}",
                active="approvals")
