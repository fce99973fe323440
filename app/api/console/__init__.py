"""The web console on the durable history, served by ``jobq api`` under /ui (docs/console.md):
every academy's jobs for an operator, one academy's for its own credential, why each waits,
approvals, and the actions the API and the command line take, through the same code."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from app.api.auth import Denied
from app.api.console import routes
from app.api.console.render import e, page


def install(api: FastAPI) -> None:
    api.include_router(routes.ui)

    @api.exception_handler(routes.LoginNeeded)
    def _login(_request: Request, exc: routes.LoginNeeded) -> Response:
        from urllib.parse import quote

        return RedirectResponse(f"/ui/login?next={quote(exc.next_path)}", status_code=303)


def denied_page(exc: Denied) -> HTMLResponse:
    """A refusal on a console page, as a page (the API answers its routes' in JSON)."""
    title = "Not found" if exc.status == 404 else "Refused"
    body = (f'<h1>{title}</h1><p class="msg msg-error" role="alert">{e(exc)}</p>'
            '<p><a href="/ui/jobs">Jobs</a></p>')
    return HTMLResponse(page(title, None, body), status_code=exc.status,
                        headers=routes._HEADERS)
