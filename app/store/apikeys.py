"""Every statement on ``api_keys``: the HTTP API's keys, one tenant's each (or an operator's,
spanning tenants), stored as the SHA-256 of the secret. Only the engine's connections read them;
a request's own work then runs on a connection bound to its tenant (app.store.db)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Text, bindparam, text
from sqlalchemy.dialects.postgresql import ARRAY

#: A new key; its id.
CREATE_KEY = text(
    """
    INSERT INTO api_keys (tenant_id, name, prefix, key_hash, scopes, rate_limit, created_by)
    VALUES (CAST(:tenant_id AS uuid), :name, :prefix, :key_hash, :scopes, :rate_limit,
            :created_by)
    RETURNING id::text
    """
).bindparams(bindparam("scopes", type_=ARRAY(Text)))

#: The live key with this hash, noting its use (at most once a second, so a busy key does not
#: write on every request). One round trip per request.
USE_KEY = text(
    """
    WITH k AS (
        SELECT k.id, k.tenant_id, k.name, k.scopes, k.rate_limit, t.status AS tenant_status
          FROM api_keys k LEFT JOIN tenants t ON t.id = k.tenant_id
         WHERE k.key_hash = :key_hash AND k.revoked_at IS NULL
    ), touched AS (
        UPDATE api_keys SET last_used_at = now()
         WHERE id = (SELECT id FROM k)
           AND (last_used_at IS NULL OR last_used_at < now() - interval '1 second')
    )
    SELECT id::text, tenant_id::text, name, scopes, rate_limit, tenant_status FROM k
    """
)

#: Keys, newest first: a tenant's, or every one.
LIST_KEYS = text(
    """
    SELECT k.id::text, k.tenant_id::text, t.name AS tenant_name, k.name, k.prefix, k.scopes,
           k.rate_limit, k.created_by, k.created_at, k.last_used_at, k.revoked_at
      FROM api_keys k LEFT JOIN tenants t ON t.id = k.tenant_id
     WHERE CAST(:tenant_id AS uuid) IS NULL OR k.tenant_id = CAST(:tenant_id AS uuid)
     ORDER BY k.created_at DESC
    """
)

#: Revoke the live key of a tenant (NULL: an operator key) with this name; its id.
REVOKE_KEY = text(
    """
    UPDATE api_keys SET revoked_at = now()
     WHERE name = :name AND revoked_at IS NULL
       AND tenant_id IS NOT DISTINCT FROM CAST(:tenant_id AS uuid)
    RETURNING id::text
    """
)


def create_key(conn, *, tenant_id: str | None, name: str, prefix: str, key_hash: str,
               scopes: list[str], rate_limit: float | None, created_by: str) -> str:
    return conn.execute(CREATE_KEY, {"tenant_id": tenant_id, "name": name, "prefix": prefix,
                                     "key_hash": key_hash, "scopes": scopes,
                                     "rate_limit": rate_limit,
                                     "created_by": created_by}).scalar_one()


def use_key(conn, key_hash: str) -> dict[str, Any] | None:
    row = conn.execute(USE_KEY, {"key_hash": key_hash}).mappings().first()
    return dict(row) if row else None


def list_keys(conn, tenant_id: str | None = None) -> list[dict[str, Any]]:
    return [dict(r) for r in conn.execute(LIST_KEYS, {"tenant_id": tenant_id}).mappings()]


def revoke_key(conn, *, tenant_id: str | None, name: str) -> str | None:
    return conn.execute(REVOKE_KEY, {"tenant_id": tenant_id, "name": name}).scalar()
