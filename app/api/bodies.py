"""What request bodies the API takes, checked before routing, parsing and authentication: JSON
only (415 otherwise) and at most JOBQ_API_MAX_BODY_BYTES (413), judged by Content-Length and
by the bytes that actually arrive, so a huge or endless body is never held in memory and nothing
about it is recorded. Pure ASGI: it wraps ``receive``; it never reads a body itself.
"""

from __future__ import annotations

from email.message import Message

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

from app.api.errors import problem

#: Without it, uvicorn would go on reading (and discarding) the rest of a refused body.
_CLOSE = {"Connection": "close"}


def is_json(content_type: str | None) -> bool:
    """``application/json``, with parameters (``; charset=utf-8``) or a ``+json`` subtype."""
    if not content_type:
        return False
    parsed = Message()
    parsed["content-type"] = content_type
    subtype = parsed.get_content_subtype()
    return parsed.get_content_maintype() == "application" and (
        subtype == "json" or subtype.endswith("+json"))


#: Where HTML forms post (the web console's pages), the one place a body may be a form.
FORM_PATHS = ("/ui/",)


def is_form(content_type: str | None) -> bool:
    """``application/x-www-form-urlencoded``, as an HTML form posts."""
    return content_type is not None and content_type.split(";")[0].strip().lower() == \
        "application/x-www-form-urlencoded"


class RequestBodies:
    """Refuses a body over ``max_bytes`` (413) or one not declared JSON (415) with the API's
    error shape; the application never sees such a request. Turned off (a huge ``max_bytes``),
    a request's whole body would be read into memory before its caller is even known."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    def too_large(self) -> str:
        return (f"the request body is larger than {self.max_bytes:,} bytes, this API's limit "
                "(JOBQ_API_MAX_BODY_BYTES)")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        declared = headers.get("content-length")
        chunked = "chunked" in headers.get("transfer-encoding", "").lower()
        length = 0
        if declared is not None:
            try:
                length = int(declared)
            except ValueError:
                await problem(400, "Content-Length must be a number of bytes",
                              headers=_CLOSE)(scope, receive, send)
                return
            if length > self.max_bytes:
                await problem(413, self.too_large(), headers=_CLOSE)(scope, receive, send)
                return
        content_type = headers.get("content-type")
        if (chunked or length > 0) and not is_json(content_type) and not (
                scope["path"].startswith(FORM_PATHS) and is_form(content_type)):
            given = headers.get("content-type")
            await problem(415, "Content-Type must be application/json"
                               + (f" (this request's is {given[:100]!r})" if given else
                                  " (this request has none)"),
                          headers=_CLOSE)(scope, receive, send)
            return
        await _Limited(self, scope, receive, send).run()


class _Limited:
    """One request whose body is counted as it arrives (a chunked body declares no length)."""

    def __init__(self, limits: RequestBodies, scope: Scope, receive: Receive,
                 send: Send) -> None:
        self.limits, self.scope, self.receive, self.send = limits, scope, receive, send
        self.received = 0
        self.started = False
        self.refused = False

    async def run(self) -> None:
        await self.limits.app(self.scope, self.counted_receive, self.guarded_send)

    async def counted_receive(self):
        if self.refused:
            return {"type": "http.disconnect"}
        message = await self.receive()
        if message["type"] == "http.request":
            self.received += len(message.get("body", b""))
            if self.received > self.limits.max_bytes:
                # The application is told the client went away (so it stops reading, and
                # nothing it had begun is kept); the client is told why.
                self.refused = True
                if not self.started:
                    self.started = True
                    await problem(413, self.limits.too_large(), headers=_CLOSE)(
                        self.scope, self.receive, self.send)
                return {"type": "http.disconnect"}
        return message

    async def guarded_send(self, message) -> None:
        if self.refused:
            return  # the 413 went out already: whatever the application answers is dropped
        if message["type"] == "http.response.start":
            self.started = True
        await self.send(message)
