"""Who is looking at the console: a session cookie made from the API's own credentials.

The login form takes an API key or a JWT and checks it as the API does (app.api.auth); the
session is a signed cookie naming the caller (never the credential), expiring after
JOBQ_CONSOLE_SESSION_SECONDS or with its token, whichever comes first; a key's session ends
when the key is revoked, a tenant's when the tenant is deleted. The cookie is HttpOnly and
SameSite=Strict, and every form that changes something carries a token tied to the session
and must come from this site (Origin or Referer): cross-site requests are refused.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

from fastapi import Request

from app.api.auth import Caller, Denied, authenticate
from app.core.settings import settings
from app.store import db, streams

COOKIE = "jobq_console"
PATH = "/ui"


@dataclass(frozen=True)
class Viewer:
    """The person behind a console session."""

    name: str
    #: Their academy; None for an operator, who sees every academy.
    tenant_id: str | None
    scopes: frozenset[str]
    key_id: str | None
    expires_at: float
    #: Ties the session's forms to it (app.api.console.session.csrf_token).
    nonce: str

    @property
    def operator(self) -> bool:
        return self.tenant_id is None

    def may(self, scope: str) -> bool:
        return scope in self.scopes

    def require(self, scope: str) -> None:
        if scope not in self.scopes:
            raise Denied(403, f"this session's credential lacks the scope {scope!r}")


def _secret() -> bytes:
    # The database's API secret (readable by the engine's role only), kept apart by a label.
    return hashlib.sha256(f"jobq-console:{db.api_secret()}".encode()).digest()


def _sign(payload: bytes) -> str:
    return base64.urlsafe_b64encode(hmac.new(_secret(), payload, "sha256").digest()).decode()


def login(credential: str, client: str | None) -> Viewer:
    """A session for ``credential`` (an API key or a JWT): refused (Denied) as the API
    refuses it, or when it may not read jobs."""
    caller: Caller = authenticate(f"Bearer {credential.strip()}", None, None, client)
    if caller.tenant_id is None and not caller.operator:
        raise Denied(403, "this credential names no academy")
    caller.require("jobs:read")
    ends = time.time() + settings.console_session_seconds
    if caller.expires_at is not None:
        ends = min(ends, caller.expires_at)
    return Viewer(caller.name, caller.tenant_id, caller.scopes, caller.key_id, ends,
                  secrets.token_urlsafe(12))


def cookie_value(viewer: Viewer) -> str:
    payload = json.dumps({"n": viewer.name, "t": viewer.tenant_id, "s": sorted(viewer.scopes),
                          "k": viewer.key_id, "e": viewer.expires_at, "c": viewer.nonce},
                         separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(payload).decode() + "." + _sign(payload)


def set_cookie(response, request: Request, viewer: Viewer) -> None:
    response.set_cookie(COOKIE, cookie_value(viewer), path=PATH, httponly=True,
                        samesite="strict", secure=request.url.scheme == "https",
                        max_age=max(1, int(viewer.expires_at - time.time())))


def clear_cookie(response) -> None:
    response.delete_cookie(COOKIE, path=PATH)


def viewer(request: Request) -> Viewer | None:
    """The session's viewer, or None (no cookie, a forged or expired one, a revoked key, a
    deleted academy)."""
    raw = request.cookies.get(COOKIE)
    if not raw or "." not in raw:
        return None
    body, _, signature = raw.rpartition(".")
    try:
        payload = base64.urlsafe_b64decode(body.encode())
    except ValueError:
        return None
    if not hmac.compare_digest(_sign(payload), signature):
        return None
    data = json.loads(payload)
    if data["e"] <= time.time():
        return None
    found = Viewer(data["n"], data["t"], frozenset(data["s"]), data["k"], data["e"], data["c"])
    if found.key_id is not None or found.tenant_id is not None:
        with db.engine().connect() as conn:
            live, statuses = streams.standing(
                conn, keys=[found.key_id] if found.key_id else [],
                tenants=[found.tenant_id] if found.tenant_id else [])
        if found.key_id is not None and found.key_id not in live:
            return None
        if found.tenant_id is not None and statuses.get(found.tenant_id) in (None, "deleted"):
            return None
    return found


def csrf_token(viewer: Viewer) -> str:
    return _sign(f"csrf:{viewer.nonce}".encode())


def check_same_site(request: Request) -> None:
    """Refuse a change that does not come from this site's own pages (403)."""
    source = request.headers.get("origin") or request.headers.get("referer")
    if not source or source == "null":
        raise Denied(403, "refused: a change must come from the console's own pages "
                          "(no Origin or Referer)")
    parts = urlsplit(source)
    if (parts.scheme, parts.netloc) != (request.url.scheme, request.url.netloc):
        raise Denied(403, f"refused: a cross-site request (from {parts.scheme}://{parts.netloc})")


def check_form(request: Request, viewer: Viewer, token: str | None) -> None:
    """A form that changes something: from this site, with this session's token."""
    check_same_site(request)
    if not token or not hmac.compare_digest(token, csrf_token(viewer)):
        raise Denied(403, "refused: the form's token does not belong to this session "
                          "(reload the page)")
