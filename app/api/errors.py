"""One shape for every 4xx and 5xx answer of the API, ``{"error": what is wrong, "field": where
(a dotted path), "job_id": the refused job kept for the audit}``: the handlers that give
FastAPI's and Starlette's own errors that shape, and the OpenAPI responses that document it.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException
from starlette.routing import Match

from app.api import schemas

_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")
#: Where FastAPI puts a request part in an error's location; the field path goes without it.
_PARTS = ("body", "query", "path", "header", "cookie")


def problem(status: int, message: str, *, headers: dict[str, str] | None = None,
            **extra: Any) -> JSONResponse:
    """An error answer; ``extra`` adds ``field`` or ``job_id``."""
    return JSONResponse({"error": message, **extra}, status_code=status, headers=headers)


def _path(location: tuple[Any, ...] | list[Any]) -> str | None:
    parts = list(location)
    if parts and parts[0] in _PARTS:
        parts = parts[1:]
    return ".".join(str(p) for p in parts) or None


def _where(document: str, position: int) -> str:
    line = document.count("\n", 0, position) + 1
    column = position - (document.rfind("\n", 0, position) + 1) + 1
    return f"line {line}, column {column}"


def validation_problem(exc: RequestValidationError) -> JSONResponse:
    errors = list(exc.errors())
    first = errors[0] if errors else {}
    kind, location = first.get("type"), tuple(first.get("loc", ()))
    if kind == "json_invalid":
        reason = (first.get("ctx") or {}).get("error", "malformed")
        document = exc.body if isinstance(exc.body, str) else ""
        position = location[1] if len(location) > 1 and isinstance(location[1], int) else 0
        return problem(400, f"the body is not valid JSON: {reason} at "
                            f"{_where(document, position)}")
    if location == ("body",):
        if kind == "missing":
            return problem(422, "this request needs a JSON body (an object)")
        return problem(422, "the body must be a JSON object, e.g. {\"intent_key\": \"...\"}")
    messages = "; ".join(f"{_path(e.get('loc', ())) or 'body'}: {e.get('msg')}"
                         for e in errors[:10])
    return problem(422, f"invalid request: {messages}", field=_path(location))


def _allowed(request: Request) -> list[str]:
    """Every method some route takes on this path (Starlette's own Allow header names only the
    first route's, and GET and POST /v1/jobs are two routes)."""
    routes = request.app.router.routes
    return [method for method in _METHODS
            if any(route.matches({**request.scope, "method": method})[0] == Match.FULL
                   for route in routes)]


def http_problem(request: Request, exc: HTTPException) -> JSONResponse:
    headers = dict(exc.headers or {})
    target = f"{request.method} {request.url.path}"
    if exc.status_code == 404:
        message = f"no route {target}: the API's routes are under /v1 (see /docs)"
    elif exc.status_code == 405:
        allowed = _allowed(request)
        headers = {k: v for k, v in headers.items() if k.lower() != "allow"}
        headers["Allow"] = ", ".join(allowed)
        message = (f"{request.method} is not allowed on {request.url.path}; allowed: "
                   f"{', '.join(allowed)}")
    elif exc.status_code == 400 and exc.detail == "There was an error parsing the body":
        message = "the body could not be read as JSON: it must be JSON text in UTF-8"
    else:
        message = str(exc.detail)
    return problem(exc.status_code, message, headers=headers or None)


def install(api: FastAPI) -> None:
    """Give ``api``'s own errors the shape (routes raise :class:`app.api.auth.Denied`, handled
    beside the routes)."""

    @api.exception_handler(RequestValidationError)
    def _invalid(_request: Request, exc: RequestValidationError) -> JSONResponse:
        return validation_problem(exc)

    @api.exception_handler(HTTPException)
    def _http(request: Request, exc: HTTPException) -> JSONResponse:
        return http_problem(request, exc)

    @api.exception_handler(Exception)
    def _crashed(_request: Request, _exc: Exception) -> JSONResponse:
        # The traceback goes to the log (uvicorn prints it once this answer is sent), never to
        # the client.
        return problem(500, "internal error: the server logged it; try again later")


def responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI responses of ``codes``, each the shared Problem schema."""
    return {code: {"model": schemas.Problem, "description": DESCRIPTIONS[code]}
            for code in codes}


DESCRIPTIONS = {
    400: "A body that is not JSON (the message says where), or a malformed header",
    401: "No, unknown, revoked or expired credentials",
    403: "A scope the caller lacks, or a tenant it may not act for",
    404: "No such job of this tenant",
    409: "The job's state does not allow it",
    413: "A request body over JOBQ_API_MAX_BODY_BYTES, refused before it is read",
    415: "A body whose Content-Type is not application/json",
    422: "A field or parameter refused: `field` names it, by path",
    429: "Over the caller's rate, or too many failed authentications from this address "
         "(see Retry-After)",
    500: "An internal error; the details are in the server's log",
}
