"""Who is calling, for which tenant, with which scopes: an API key (``Authorization: Bearer
jq_...`` or ``X-API-Key``) or a JWT bearer token verified with ``JOBQ_JWT_SECRET`` (HS256) or
the keys at ``JOBQ_JWT_JWKS_URL``, whose ``JOBQ_JWT_TENANT_CLAIM`` names the tenant.

An operator key (no tenant of its own) names the tenant of each request in ``X-Jobq-Tenant``.
Every failure is a :class:`Denied` with the HTTP status it answers (401 or 403).
"""

from __future__ import annotations

import threading
import uuid
from dataclasses import dataclass
from typing import Any

import jwt

from app.api import keys
from app.core.settings import settings
from app.store import apikeys, db, tenants

TENANT_HEADER = "X-Jobq-Tenant"


class Denied(Exception):
    """A refusal: the HTTP status it answers, and the field or parameter it concerns."""

    def __init__(self, status: int, message: str, *, headers: dict[str, str] | None = None,
                 field: str | None = None):
        super().__init__(message)
        self.status = status
        self.headers = headers
        self.field = field


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
                 tenant_header: str | None) -> Caller:
    token = api_key
    if token is None and authorization:
        scheme, _, value = authorization.partition(" ")
        if scheme.lower() != "bearer" or not value.strip():
            raise Denied(401, "Authorization must be 'Bearer <API key or JWT>'")
        token = value.strip()
    if not token:
        raise Denied(401, "no credentials: send an API key (Authorization: Bearer jq_..., or "
                          "X-API-Key) or a JWT bearer token")
    if token.startswith(keys.PREFIX):
        return _key_caller(token, tenant_header)
    return _jwt_caller(token)


def _key_caller(secret: str, tenant_header: str | None) -> Caller:
    with db.status_conn() as conn:
        found = apikeys.use_key(conn, keys.hash_key(secret))
    if found is None:
        raise Denied(401, "unknown or revoked API key")
    rate = settings.api_rate_limit if found["rate_limit"] is None else found["rate_limit"]
    common = {"name": f"api:{found['name']}", "scopes": frozenset(found["scopes"]),
              "limit_key": f"key:{found['id']}", "rate_limit": rate}
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
            found = _jwks[url] = jwt.PyJWKClient(url, cache_keys=True, lifespan=300,
                                                 timeout=settings.outside_call_timeout)
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
    if not (settings.jwt_secret or settings.jwt_jwks_url):
        raise Denied(401, "not an API key (they start with jq_), and JWT bearer tokens are not "
                          "configured here (JOBQ_JWT_SECRET or JOBQ_JWT_JWKS_URL)")
    options = {"require": ["exp", "sub"]}
    common: dict[str, Any] = {"audience": settings.jwt_audience, "issuer": settings.jwt_issuer,
                              "options": {**options, "verify_aud": bool(settings.jwt_audience)}}
    try:
        header = jwt.get_unverified_header(token)
        if settings.jwt_jwks_url and header.get("alg") != "HS256":
            key = _jwks_client(settings.jwt_jwks_url).get_signing_key_from_jwt(token).key
            claims = jwt.decode(token, key, algorithms=["RS256", "ES256", "PS256", "EdDSA"],
                                **common)
        elif settings.jwt_secret:
            claims = jwt.decode(token, settings.jwt_secret, algorithms=["HS256"], **common)
        else:
            raise Denied(401, "this server verifies tokens with its JWKS only (RS256/ES256)")
    except jwt.ExpiredSignatureError:
        raise Denied(401, "the token has expired") from None
    except jwt.PyJWKClientError as exc:
        raise Denied(401, f"the token's key is not in the JWKS: {exc}") from None
    except jwt.InvalidTokenError as exc:
        raise Denied(401, f"invalid token: {exc}") from None
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
    raw_scopes = claims.get("scope", claims.get("scopes"))
    if isinstance(raw_scopes, str):
        scopes = frozenset(raw_scopes.split())
    elif isinstance(raw_scopes, list):
        scopes = frozenset(str(s) for s in raw_scopes)
    else:
        scopes = frozenset(settings.jwt_default_scopes)
    subject = str(claims["sub"])
    return Caller(name=f"jwt:{subject}", tenant_id=tenant, scopes=scopes,
                  limit_key=f"jwt:{tenant}:{subject}", rate_limit=settings.api_rate_limit)
