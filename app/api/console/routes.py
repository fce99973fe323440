"""The web console's routes under /ui: log in and out, the pages, the actions, the assets.

Pages are plain functions (FastAPI runs them in its thread pool), like the API's routes. A
request without a live session is sent to the login form; another academy's job answers 404
as it does over the API. Forms post url-encoded (app.api.bodies lets them in under /ui/ only).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import parse_qs, quote

from fastapi import APIRouter, Depends, Request
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse, Response
from starlette.concurrency import run_in_threadpool

from app.api import jobactions
from app.api.auth import Denied
from app.api.console import session
from app.api.console.academies import academies_page
from app.api.console.academies import act as academy_action
from app.api.console.channels import channels_page
from app.api.console.jobpage import job_page, live_part, restore_secrets
from app.api.console.lists import JobsQuery, approvals_page, jobs_page
from app.api.console.queues import queues_page
from app.api.console.render import e, page
from app.api.console.session import Viewer

STATIC = Path(__file__).parent / "static"
ASSETS = {"console.css": "text/css", "console.js": "text/javascript"}
#: Pages are the caller's own data: never kept by a shared cache, never framed.
_HEADERS = {"Cache-Control": "no-store", "X-Frame-Options": "DENY",
            "Content-Security-Policy": "default-src 'self'; frame-ancestors 'none'",
            "Referrer-Policy": "same-origin"}

ui = APIRouter(prefix="/ui", include_in_schema=False)


class LoginNeeded(Exception):
    """No live session: answered with a redirect to the login form (app.api.console.install)."""

    def __init__(self, next_path: str) -> None:
        super().__init__(next_path)
        self.next_path = next_path


def current(request: Request) -> Viewer:
    found = session.viewer(request)
    if found is None:
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        raise LoginNeeded(target if request.method == "GET" else "/ui/jobs")
    return found


Seen = Annotated[Viewer, Depends(current)]


def html(body: str, status: int = 200) -> HTMLResponse:
    return HTMLResponse(body, status_code=status, headers=_HEADERS)


async def form(request: Request) -> dict[str, str]:
    raw = (await request.body()).decode("utf-8", errors="replace")
    return {k: v[0] for k, v in parse_qs(raw, keep_blank_values=True).items()}


def _next(value: str | None) -> str:
    # Only a path of this console: never an open redirect to another site.
    return value if value and value.startswith("/ui/") and not value.startswith("//") \
        else "/ui/jobs"


def login_form(message: str = "", next_path: str = "/ui/jobs") -> str:
    note = f'<p class="msg msg-error" role="alert">{e(message)}</p>' if message else ""
    return page("Log in", None, f"""<h1>Log in</h1>{note}
<form class="login" method="post" action="/ui/login">
<input type="hidden" name="next" value="{e(next_path)}">
<label>API key or token<input name="credential" type="password" autocomplete="off" required
 placeholder="jq_... or a JWT"></label>
<button>Log in</button>
<p class="hint">An operator key (<code>jobq keys create --operator</code>) sees every academy; an
academy's key or its users' token sees that academy only.</p></form>""")


@ui.get("")
@ui.get("/")
def home() -> RedirectResponse:
    return RedirectResponse("/ui/jobs", status_code=303)


@ui.get("/login")
def login_page(next: str | None = None) -> HTMLResponse:
    return html(login_form(next_path=_next(next)))


@ui.post("/login")
async def login(request: Request) -> Response:
    fields = await form(request)
    target = _next(fields.get("next"))
    try:
        session.check_same_site(request)
        client = request.client.host if request.client else None
        viewer = await run_in_threadpool(session.login, fields.get("credential", ""), client)
    except Denied as refused:
        return html(login_form(str(refused), target), refused.status)
    response = RedirectResponse(target, status_code=303)
    session.set_cookie(response, request, viewer)
    return response


@ui.post("/logout")
async def logout(request: Request) -> Response:
    fields = await form(request)
    viewer = await run_in_threadpool(session.viewer, request)
    if viewer is not None:
        session.check_form(request, viewer, fields.get("csrf"))
    response = RedirectResponse("/ui/login", status_code=303)
    session.clear_cookie(response)
    return response


@ui.get("/static/{name}")
def asset(name: str) -> FileResponse:
    if name not in ASSETS:
        raise Denied(404, f"no asset {name[:64]!r}")
    return FileResponse(STATIC / name, media_type=ASSETS[name],
                        headers={"Cache-Control": "max-age=300"})


@ui.get("/jobs")
def jobs(viewer: Seen, academy: str = "", intent: str = "", status: str = "", queue: str = "",
         since: str = "", q: str = "", cursor: str = "", fragment: int = 0,
         until: str = "") -> HTMLResponse:
    query = JobsQuery(academy, intent, status, queue, since, q, cursor, until)
    return html(jobs_page(viewer, query, fragment=bool(fragment)))


@ui.get("/jobs/{job_id}")
def job(viewer: Seen, job_id: str, fragment: int = 0, done: str = "") -> HTMLResponse:
    if fragment:
        part, ended = live_part(viewer, job_id)
        response = html(part)
        if ended:
            response.headers["X-Jobq-Ended"] = "1"
        return response
    return html(job_page(viewer, job_id, done=done))


@ui.get("/approvals")
def approvals(viewer: Seen, done: str = "") -> HTMLResponse:
    return html(approvals_page(viewer, done=done))


@ui.get("/academies")
def academies(viewer: Seen, done: str = "") -> HTMLResponse:
    return html(academies_page(viewer, done=done))


@ui.post("/academies/{tenant_id}/{verb}")
async def academy_act(request: Request, tenant_id: str, verb: str) -> Response:
    viewer = await run_in_threadpool(current, request)
    fields = await form(request)
    session.check_form(request, viewer, fields.get("csrf"))
    try:
        said = await run_in_threadpool(academy_action, viewer, tenant_id, verb, fields)
    except Denied as refused:
        if refused.status in (403, 404):
            raise
        body = await run_in_threadpool(academies_page, viewer, error=str(refused))
        return html(body, refused.status)
    return RedirectResponse(f"/ui/academies?done={quote(said)}", status_code=303)


@ui.get("/queues")
def queues(viewer: Seen) -> HTMLResponse:
    return html(queues_page(viewer))


@ui.get("/channels")
def channels(viewer: Seen, fragment: int = 0) -> HTMLResponse:
    return html(channels_page(viewer, fragment=bool(fragment)))


def _act(viewer: Viewer, job_id: str, verb: str, fields: dict[str, str]) -> str:
    """Do ``verb`` to the job as ``viewer``; what to tell them (Denied when refused)."""
    by, note = viewer.name, fields.get("note") or fields.get("reason") or None
    tenant = viewer.tenant_id
    if verb == "cancel":
        viewer.require("jobs:write")
        was = jobactions.cancel(tenant, job_id, by=by, reason=note)
        return f"Cancelled (was {was})."
    if verb in ("approve", "reject"):
        viewer.require("jobs:approve")
        if verb == "approve":
            jobactions.approve(tenant, job_id, by=by, note=note)
            return "Approved: it is pending and runs now."
        jobactions.reject(tenant, job_id, by=by, reason=note)
        return "Rejected: it will not run."
    viewer.require("jobs:write")
    params: dict[str, Any] | None = None
    if fields.get("corrected"):
        try:
            given = json.loads(fields.get("params") or "")
        except ValueError as exc:
            raise Denied(422, f"the corrected parameters are not JSON: {exc}",
                         field="params") from None
        if not isinstance(given, dict):
            raise Denied(422, "the corrected parameters must be a JSON object {...}",
                         field="params")
        stored = jobactions.find_row(tenant, job_id)
        from app.api.schemas import secret_fields

        params = restore_secrets(given, stored["intent_params"],
                                 secret_fields(stored["intent_key"]))
    was, status = jobactions.retry(tenant, job_id, by=by, params=params)
    changed = " on the corrected parameters" if params is not None else ""
    return f"Retried{changed} (was {was}); it is {status.replace('_', ' ')} now."


@ui.post("/jobs/{job_id}/{verb}")
async def act(request: Request, job_id: str, verb: str) -> Response:
    viewer = await run_in_threadpool(current, request)
    fields = await form(request)
    if verb not in ("cancel", "retry", "approve", "reject"):
        raise Denied(404, f"no action {verb[:32]!r}")
    session.check_form(request, viewer, fields.get("csrf"))
    try:
        said = await run_in_threadpool(_act, viewer, job_id, verb, fields)
    except Denied as refused:
        if refused.status == 404:
            raise
        body = await run_in_threadpool(job_page, viewer, job_id, error=str(refused),
                                       params_text=fields.get("params"))
        return html(body, refused.status)
    back = "/ui/approvals" if "/ui/approvals" in (request.headers.get("referer") or "") \
        else f"/ui/jobs/{jobactions.job_id(job_id)}"
    return RedirectResponse(f"{back}?done={quote(said)}", status_code=303)
