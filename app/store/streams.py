"""What the API's shared stream watcher reads (app.api.watcher): every watched job's state and
new history in one transaction per tick, whatever the number of open streams, and whether the
credentials those streams were opened with still hold.

The watcher reads on the engine's connection, across tenants: each stream was opened through its
tenant's row-level security, and every statement here matches a job with the tenant it was
opened for as well as its id.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import BigInteger, Text, bindparam, text
from sqlalchemy.dialects.postgresql import ARRAY

_TEXTS = ARRAY(Text)

#: The watched jobs whose row changed since the version each was last seen at (``xmin``, the
#: transaction that wrote the row's current version; NULL: never seen), and those that are gone
#: (``gone``: deleted by retention, or not the tenant's).
CHANGED_JOBS = text(
    """
    SELECT w.id::text AS id, j.id IS NULL AS gone, j.xmin::text AS version, j.intent_key,
           j.status, j.progress, coalesce(j.retry_count, 0) AS retry_count, j.max_retries,
           j.error_message, j.result, j.executed_at, j.completed_at, j.worker
      FROM unnest(CAST(:ids AS uuid[]), CAST(:tenants AS uuid[]), CAST(:versions AS text[]))
           AS w(id, tenant_id, version)
      LEFT JOIN job_executions j ON j.id = w.id AND j.tenant_id = w.tenant_id
     WHERE j.id IS NULL OR w.version IS NULL OR j.xmin::text <> w.version
    """
).bindparams(bindparam("ids", type_=_TEXTS), bindparam("tenants", type_=_TEXTS),
             bindparam("versions", type_=_TEXTS))

#: The watched jobs' events after the last one each has seen, in the order they happened.
NEW_EVENTS = text(
    """
    SELECT e.job_id::text AS job_id, e.id, e.attempt, e.kind, e.at, e.worker, e.error, e.detail
      FROM unnest(CAST(:ids AS uuid[]), CAST(:afters AS bigint[])) AS w(id, after)
      JOIN job_events e ON e.job_id = w.id AND e.id > w.after
     ORDER BY e.at, e.id
    """
).bindparams(bindparam("ids", type_=_TEXTS), bindparam("afters", type_=ARRAY(BigInteger)))

#: Of the given keys, the live ones (not revoked); of the given tenants, each one's status.
STANDING = text(
    """
    SELECT 'key' AS kind, id::text AS id, NULL AS status
      FROM api_keys WHERE id = ANY(CAST(:keys AS uuid[])) AND revoked_at IS NULL
    UNION ALL
    SELECT 'tenant', id::text, status FROM tenants WHERE id = ANY(CAST(:tenants AS uuid[]))
    """
).bindparams(bindparam("keys", type_=_TEXTS), bindparam("tenants", type_=_TEXTS))


def changed_jobs(conn, ids: Sequence[str], tenants: Sequence[str],
                 versions: Sequence[str | None]) -> list[dict[str, Any]]:
    rows = conn.execute(CHANGED_JOBS, {"ids": list(ids), "tenants": list(tenants),
                                       "versions": list(versions)})
    return [dict(r) for r in rows.mappings()]


def new_events(conn, ids: Sequence[str], afters: Sequence[int]) -> list[dict[str, Any]]:
    rows = conn.execute(NEW_EVENTS, {"ids": list(ids), "afters": list(afters)})
    return [dict(r) for r in rows.mappings()]


def standing(conn, *, keys: Sequence[str], tenants: Sequence[str]
             ) -> tuple[set[str], dict[str, str]]:
    """``(the live keys among keys, {tenant: status} of those that exist)``."""
    live: set[str] = set()
    statuses: dict[str, str] = {}
    for row in conn.execute(STANDING, {"keys": list(keys), "tenants": list(tenants)}):
        if row.kind == "key":
            live.add(row.id)
        else:
            statuses[row.id] = row.status
    return live, statuses
