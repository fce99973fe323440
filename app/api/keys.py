"""API keys: made here, shown once, stored as the SHA-256 of the secret (app.store.apikeys).

A key reads ``jq_`` followed by 43 URL-safe characters (256 random bits); its first 8 characters
after ``jq_`` are kept in the clear to tell keys apart in listings.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass

from app.store import apikeys, db

PREFIX = "jq_"
#: What a key (or a token) may be allowed to do; each route needs one of them.
SCOPES = {
    "jobs:read": "list and read jobs, their history and live events, and the intents",
    "jobs:write": "ask for jobs, cancel and retry them",
    "jobs:approve": "approve or reject jobs awaiting approval",
    "metrics:read": "read /metrics (operator keys)",
    "tenants:write": "set an academy's channel limits (operator keys)",
}
#: What a tenant's credential may hold at most: a token's claimed scopes are cut to these, and
#: a tenant's key is made with no other.
TENANT_SCOPES = frozenset({"jobs:read", "jobs:write", "jobs:approve"})


class KeyRefused(ValueError):
    """A key cannot be made as asked (unknown scope, a name already in use)."""


@dataclass(frozen=True)
class NewKey:
    id: str
    name: str
    #: The secret itself: shown once, never stored.
    secret: str
    scopes: tuple[str, ...]


def hash_key(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def check_scopes(scopes: list[str]) -> list[str]:
    unknown = [s for s in scopes if s not in SCOPES]
    if unknown:
        raise KeyRefused(f"unknown scope {', '.join(map(repr, unknown))}: "
                        f"one of {', '.join(SCOPES)}")
    if not scopes:
        raise KeyRefused(f"a key needs at least one scope: {', '.join(SCOPES)}")
    return sorted(set(scopes))


def create(*, tenant_id: str | None, name: str, scopes: list[str], by: str,
           rate_limit: float | None = None) -> NewKey:
    """Make a key of ``tenant_id`` (None: an operator key, spanning tenants)."""
    from sqlalchemy.exc import IntegrityError

    scopes = check_scopes(scopes)
    beyond = sorted(set(scopes) - TENANT_SCOPES) if tenant_id is not None else []
    if beyond:
        raise KeyRefused(f"{', '.join(beyond)} is for operator keys only (--operator): "
                         "/metrics spans every tenant, and an academy's limits are not its own "
                         "to raise")
    if not name.strip():
        raise KeyRefused("a key needs a name (e.g. web)")
    secret = PREFIX + secrets.token_urlsafe(32)
    try:
        with db.engine().begin() as conn:
            key_id = apikeys.create_key(
                conn, tenant_id=tenant_id, name=name, prefix=secret[len(PREFIX):][:8],
                key_hash=hash_key(secret), scopes=scopes, rate_limit=rate_limit, created_by=by)
    except IntegrityError:
        raise KeyRefused(f"a live key named {name!r} exists already here: revoke it first, "
                        "or choose another name") from None
    return NewKey(key_id, name, secret, tuple(scopes))
