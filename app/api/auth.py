"""Who is calling, for which tenant, with which scopes: an API key (``Authorization: Bearer
jq_...`` or ``X-API-Key``) or a JWT bearer token verified with ``JOBQ_JWT_SECRET`` (HS256) or
the keys at ``JOBQ_JWT_JWKS_URL``, whose ``JOBQ_JWT_TENANT_CLAIM`` names the tenant.

An operator key (no tenant of its own) names the tenant of each request in ``X-Jobq-Tenant``.
Every failure is a :class:`Denied` with the HTTP status it answers (401, 403, or 429 for a
client address that failed too often: it is refused before its credentials are looked up).
"""

from __future__ import annotations

import threading
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import jwt

from app.api import keys, ratelimit
from app.core.settings import SettingsError, settings
from app.store import apikeys, db, tenants

TENANT_HEADER = "X-Jobq-Tenant"
#: Credentials refused as bad are refused again from memory for this long, so a flood of one
#: bad key costs no hash and no database transaction. A revoked key never comes back; a short
#: time bounds what a refusal for a passing reason (a JWKS being rotated) can cost.
REFUSED_SECONDS = 30.0
#: At most this many are remembered (the oldest go first), and none longer than
#: REFUSED_LONGEST characters: the memory stays bounded whatever is sent.
REFUSED_MAX = 4096
REFUSED_LONGEST = 2048
#: Seconds between two JWKS fetches that a token naming an unknown key id may cause.
JWKS_COOLDOWN_SECONDS = 30.0


class Denied(Exception):
    """A refusal: the HTTP status it answers, and the field or parameter it concerns."""

    def __init__(self, status: int, message: str, *, headers: dict[str, str] | None = None,
                 field: str | None = None):
        super().__init__(message)
        self.status = status
        self.headers = headers
        self.field = field


class BadCredentials(Denied):
    """Credentials that were presented and are wrong: a failed authentication, counted against
    the client's address. ``remember``: the same credentials will be refused again (an unknown
    key, a bad signature, an expired token), so the refusal is kept for REFUSED_SECONDS."""

    def __init__(self, message: str, *, remember: bool = True):
        super().__init__(401, message)
        self.remember = remember


class _Refusals:
    """Recently refused credentials and why (in this process)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._found: OrderedDict[str, tuple[float, str]] = OrderedDict()

    def get(self, token: str, *, now: float | None = None) -> str | None:
        now = time.monotonic() if now is None else now
        with self._lock:
            found = self._found.get(token)
            if found is None:
                return None
            if found[0] <= now:
                del self._found[token]
                return None
            return found[1]

    def put(self, token: str, message: str, *, now: float | None = None) -> None:
        if len(token) > REFUSED_LONGEST:
            return
        now = time.monotonic() if now is None else now
        with self._lock:
            self._found[token] = (now + REFUSED_SECONDS, message)
            self._found.move_to_end(token)
            while len(self._found) > REFUSED_MAX:
                self._found.popitem(last=False)


_refused = _Refusals()


def check_settings() -> None:
    """Refuse to serve tokens that would be checked less than this API needs (SettingsError):
    audience and issuer required, default scopes a tenant may have."""
    settings.require_jwt_checks()
    if not settings.jwt_enabled:
        return
    beyond = sorted(set(settings.jwt_default_scopes) - keys.TENANT_SCOPES)
    if beyond:
        raise SettingsError(
            f"JOBQ_JWT_DEFAULT_SCOPES names {', '.join(beyond)}, which a tenant's token cannot "
            f"hold: use {', '.join(sorted(keys.TENANT_SCOPES))}")


@dataclass(frozen=True)
class Caller:
    """The caller of one request."""

    #: Named in the job's history: ``api:key-name`` or ``jwt:subject``.
    name: str
    #: The tenant the request acts for (None only for an operator key's tenant-free routes).
    tenant_id: str | None
    scopes: frozenset[str]
    #: What the rate limit counts against (a key's id, or a token's tenant and subject).
    limit_key: str
    #: Requests per second (0: unlimited).
    rate_limit: float
    operator: bool = False
    #: The API key's id (None for a token): an open event stream checks it is still live.
    key_id: str | None = None
    #: When a token expires (epoch seconds; None for a key): an event stream ends then.
    expires_at: float | None = None

    def require(self, scope: str) -> None:
        if scope not in self.scopes:
            raise Denied(403, f"this {'key' if self.name.startswith('api:') else 'token'} "
                              f"lacks the scope {scope!r}")

    def for_tenant(self) -> str:
        if self.tenant_id is None:
            raise Denied(400, f"an operator key names the tenant of each request in the "
                              f"{TENANT_HEADER} header")
        return self.tenant_id


def authenticate(authorization: str | None, api_key: str | None,
                 tenant_header: str | None, client: str | None = None) -> Caller:
    """The caller these credentials name. ``client`` (the peer's address) is refused with 429
    while it is over its failed authentications; bad credentials count against it."""
    token = api_key
    if token is None and authorization:
        scheme, _, value = authorization.partition(" ")
        if scheme.lower() != "bearer" or not value.strip():
            raise Denied(401, "Authorization must be 'Bearer <API key or JWT>'")
        token = value.strip()
    if not token:
        raise Denied(401, "no credentials: send an API key (Authorization: Bearer jq_..., or "
                          "X-API-Key) or a JWT bearer token")
    limit, window = settings.api_auth_failures, settings.api_auth_failure_window
    counted = client is not None and limit > 0
    who = ratelimit.client_key(client) if counted else ""
    if counted:
        _check_failures(who, ratelimit.failures_wait(who, limit, window))
    try:
        known = _refused.get(token)
        if known is not None:
            raise BadCredentials(known, remember=False)
        if token.startswith(keys.PREFIX):
            return _key_caller(token, tenant_header)
        return _jwt_caller(token)
    except BadCredentials as refused:
        if refused.remember:
            _refused.put(token, str(refused))
        if counted and ratelimit.count_failure(who, window) > limit:
            # Requests racing past the check above: still no more than ``limit`` 401s.
            _check_failures(who, ratelimit.failures_wait(who, limit, window))
        raise


def _check_failures(who: str, wait: float | None) -> None:
    if wait is not None:
        limit, window = settings.api_auth_failures, settings.api_auth_failure_window
        after = ratelimit.retry_after_header(wait)
        raise Denied(429, f"too many failed authentications from this address (at most "
                          f"{limit} in {window:g} s): try again in {after} s",
                     headers={"Retry-After": after})


def _key_caller(secret: str, tenant_header: str | None) -> Caller:
    with db.status_conn() as conn:
        found = apikeys.use_key(conn, keys.hash_key(secret))
    if found is None:
        raise BadCredentials("unknown or revoked API key")
    rate = settings.api_rate_limit if found["rate_limit"] is None else found["rate_limit"]
    common = {"name": f"api:{found['name']}", "scopes": frozenset(found["scopes"]),
              "limit_key": f"key:{found['id']}", "rate_limit": rate, "key_id": found["id"]}
    if found["tenant_id"] is None:  # an operator key
        tenant = _tenant_from_header(tenant_header) if tenant_header else None
        return Caller(tenant_id=tenant, operator=True, **common)
    if tenant_header and tenant_header != found["tenant_id"]:
        raise Denied(403, "this key belongs to another tenant than the one named in "
                          f"{TENANT_HEADER}")
    if found["tenant_status"] == "deleted":
        raise Denied(403, "the key's tenant is deleted")
    return Caller(tenant_id=found["tenant_id"], **common)


def _tenant_from_header(value: str) -> str:
    try:
        tenant = str(uuid.UUID(value))
    except ValueError:
        raise Denied(400, f"{TENANT_HEADER} must be a tenant id (a UUID)") from None
    with db.engine().connect() as conn:
        if tenants.status_of(conn, tenant) is None:
            raise Denied(404, f"unknown tenant {tenant}")
    return tenant


_jwks_lock = threading.Lock()
_jwks: dict[str, jwt.PyJWKClient] = {}


def _jwks_client(url: str) -> jwt.PyJWKClient:
    with _jwks_lock:
        found = _jwks.get(url)
        if found is None:
            found = _jwks[url] = jwt.PyJWKClient(
                url, cache_keys=True, lifespan=300, timeout=settings.outside_call_timeout,
                cooldown_duration=JWKS_COOLDOWN_SECONDS)
        return found


def _claim(claims: dict[str, Any], path: str) -> Any:
    """A claim by name, or by a dotted path into nested claims (``app_metadata.tenant_id``)."""
    value: Any = claims
    for part in path.split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return value


def _jwt_caller(token: str) -> Caller:
    if not settings.jwt_enabled:
        raise BadCredentials("not an API key (they start with jq_), and JWT bearer tokens are "
                             "not configured here (JOBQ_JWT_SECRET or JOBQ_JWT_JWKS_URL)")
    if not (settings.jwt_audience and settings.jwt_issuer):  # create_app refuses to start so
        raise BadCredentials("JWT bearer tokens are not accepted here without "
                             "JOBQ_JWT_AUDIENCE and JOBQ_JWT_ISSUER")
    common: dict[str, Any] = {"audience": settings.jwt_audience, "issuer": settings.jwt_issuer,
                              "leeway": settings.jwt_leeway,
                              "options": {"require": ["exp", "sub", "aud", "iss"]}}
    try:
        header = jwt.get_unverified_header(token)
        if settings.jwt_jwks_url and header.get("alg") != "HS256":
            key = _jwks_client(settings.jwt_jwks_url).get_signing_key_from_jwt(token).key
            claims = jwt.decode(token, key, algorithms=["RS256", "ES256", "PS256", "EdDSA"],
                                **common)
        elif settings.jwt_secret:
            claims = jwt.decode(token, settings.jwt_secret, algorithms=["HS256"], **common)
        else:
            raise BadCredentials("this server verifies tokens with its JWKS only (RS256/ES256)")
    except jwt.ExpiredSignatureError:
        raise BadCredentials("the token has expired") from None
    except jwt.ImmatureSignatureError:
        raise BadCredentials("the token is not valid yet (nbf or iat in the future)",
                             remember=False) from None
    except jwt.InvalidAudienceError:
        raise BadCredentials("the token is for another audience (aud) than this API") from None
    except jwt.InvalidIssuerError:
        raise BadCredentials("the token comes from another issuer (iss) than the one this API "
                             "trusts") from None
    except jwt.PyJWKClientConnectionError as exc:
        raise Denied(401, f"the identity provider's keys could not be fetched: {exc}") from None
    except jwt.PyJWKClientError as exc:
        # An unknown key id may be a key just rotated in: counted, not remembered.
        raise BadCredentials(f"the token's key is not in the JWKS: {exc}",
                             remember=False) from None
    except jwt.InvalidTokenError as exc:
        raise BadCredentials(f"invalid token: {exc}") from None
    raw_tenant = _claim(claims, settings.jwt_tenant_claim)
    try:
        tenant = str(uuid.UUID(str(raw_tenant)))
    except ValueError:
        raise Denied(403, f"the token's {settings.jwt_tenant_claim!r} claim names no tenant "
                          "(a UUID)") from None
    with db.engine().connect() as conn:
        status = tenants.status_of(conn, tenant)
    if status is None or status == "deleted":
        raise Denied(403, f"the token's tenant {tenant} is {'unknown' if status is None else status}")
    subject = str(claims["sub"])
    return Caller(name=f"jwt:{subject}", tenant_id=tenant, scopes=token_scopes(claims),
                  limit_key=f"jwt:{tenant}:{subject}", rate_limit=settings.api_rate_limit,
                  expires_at=float(claims["exp"]))


def token_scopes(claims: dict[str, Any]) -> frozenset[str]:
    """What a token may do: its ``scope`` (or ``scopes``) claim, else JOBQ_JWT_DEFAULT_SCOPES,
    cut to what a tenant may hold. A token says what its issuer allowed, not what this API
    grants: one claiming ``metrics:read`` or a scope unknown here gets no more for it."""
    raw = claims.get("scope", claims.get("scopes"))
    if isinstance(raw, str):
        claimed = frozenset(raw.split())
    elif isinstance(raw, list):
        claimed = frozenset(str(s) for s in raw)
    else:
        claimed = frozenset(settings.jwt_default_scopes)
    return claimed & keys.TENANT_SCOPES
