"""Every statement the command line reads with, named, in one place (procrastinate's manager).

Reads of jobs, their events and statistics live here; every change of a job's state goes through
:mod:`app.store.jobstore`, and tenants have :mod:`app.store.tenants`.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Text, bindparam, text
from sqlalchemy.dialects.postgresql import ARRAY

_TEXTS = ARRAY(Text)

#: The columns a job is shown with; ``tenant_name`` comes from its tenant.
_JOB_COLUMNS = """
    j.id::text AS id, j.tenant_id::text AS tenant_id, t.name AS tenant_name,
    t.status AS tenant_status, j.intent_key, j.intent_params, j.status,
    coalesce(j.retry_count, 0) AS retry_count, j.max_retries, j.created_at, j.run_at,
    j.executed_at, j.completed_at, j.error_message, j.result, j.progress, j.queue, j.source,
    j.worker, j.idempotency_key, j.parent_id::text AS parent_id, j.published_at, j.updated_at,
    j.requested_by, j.approval_expires_at, j.params_dropped, j.traceparent
"""

# The filters every job listing shares. A NULL parameter means "no filter"; PostgreSQL folds
# those branches away when it plans the statement, so each listing still uses its index.

#: Which tenant, states, intents and queue (the window's time aside).
WHO_FILTERS = """
       (CAST(:tenant_id AS uuid) IS NULL OR j.tenant_id = CAST(:tenant_id AS uuid))
   AND (CAST(:statuses AS text[]) IS NULL OR j.status = ANY(CAST(:statuses AS text[])))
   AND (CAST(:intent AS text) IS NULL OR j.intent_key = CAST(:intent AS text))
   AND (CAST(:intent_like AS text) IS NULL OR j.intent_key LIKE CAST(:intent_like AS text))
   AND (CAST(:queue AS text) IS NULL OR j.queue = CAST(:queue AS text))
"""
#: The window: created within it.
CREATED_FILTERS = """
       (CAST(:since_seconds AS float8) IS NULL
        OR j.created_at >= now() - make_interval(secs => CAST(:since_seconds AS float8)))
   AND (CAST(:since_at AS timestamptz) IS NULL OR j.created_at >= CAST(:since_at AS timestamptz))
   AND (CAST(:until_seconds AS float8) IS NULL
        OR j.created_at < now() - make_interval(secs => CAST(:until_seconds AS float8)))
   AND (CAST(:until_at AS timestamptz) IS NULL OR j.created_at < CAST(:until_at AS timestamptz))
"""
_JOB_FILTERS = WHO_FILTERS + "   AND" + CREATED_FILTERS


@dataclass(frozen=True)
class JobFilter:
    """Which jobs a listing, a bulk retry or the statistics look at."""

    tenant_id: str | None = None
    statuses: Sequence[str] | None = None
    #: An exact intent key, or a pattern ending in ``*`` (``billing.*``).
    intent: str | None = None
    #: A window reaching back from the database's now, or an absolute start.
    since_seconds: float | None = None
    since_at: dt.datetime | None = None
    queue: str | None = None
    #: The window's end, the same way: created before this long ago, or before this time.
    until_seconds: float | None = None
    until_at: dt.datetime | None = None

    def params(self) -> dict[str, Any]:
        intent, intent_like = self.intent, None
        if intent is not None and intent.endswith("*"):
            escaped = intent[:-1].replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            intent, intent_like = None, escaped + "%"
        return {
            "tenant_id": self.tenant_id,
            "statuses": list(self.statuses) if self.statuses else None,
            "intent": intent,
            "intent_like": intent_like,
            "since_seconds": self.since_seconds,
            "since_at": self.since_at,
            "queue": self.queue,
            "until_seconds": self.until_seconds,
            "until_at": self.until_at,
        }


# --- jobs ------------------------------------------------------------------------------------

#: A page of jobs, newest first.
LIST_JOBS = text(
    f"""
    SELECT {_JOB_COLUMNS}
      FROM job_executions j LEFT JOIN tenants t ON t.id = j.tenant_id
     WHERE {_JOB_FILTERS}
     ORDER BY j.created_at DESC, j.id DESC
     LIMIT :limit OFFSET :offset
    """
).bindparams(bindparam("statuses", type_=_TEXTS))

#: A page of jobs, newest first, after a cursor (the last row of the previous page): stable
#: while new jobs arrive, unlike an offset.
LIST_JOBS_AFTER = text(
    f"""
    SELECT {_JOB_COLUMNS}
      FROM job_executions j LEFT JOIN tenants t ON t.id = j.tenant_id
     WHERE {_JOB_FILTERS}
       AND (CAST(:cursor_at AS timestamptz) IS NULL
            OR (j.created_at, j.id) < (CAST(:cursor_at AS timestamptz), CAST(:cursor_id AS uuid)))
     ORDER BY j.created_at DESC, j.id DESC
     LIMIT :limit
    """
).bindparams(bindparam("statuses", type_=_TEXTS))

#: Jobs whose id lies in ``[lo, hi]``: one id, or every id with a given prefix.
FIND_JOBS_BY_ID_RANGE = text(
    f"""
    SELECT {_JOB_COLUMNS}
      FROM job_executions j LEFT JOIN tenants t ON t.id = j.tenant_id
     WHERE j.id BETWEEN CAST(:lo AS uuid) AND CAST(:hi AS uuid)
     ORDER BY j.id
     LIMIT 2
    """
)

#: The jobs an idempotency key names (one per tenant), on the key's unique index when a
#: tenant is given.
FIND_JOBS_BY_IDEMPOTENCY_KEY = text(
    f"""
    SELECT {_JOB_COLUMNS}
      FROM job_executions j LEFT JOIN tenants t ON t.id = j.tenant_id
     WHERE j.idempotency_key = :key
       AND (CAST(:tenant_id AS uuid) IS NULL OR j.tenant_id = CAST(:tenant_id AS uuid))
     ORDER BY j.created_at DESC, j.id DESC
     LIMIT :limit
    """
)

#: A job's history, oldest first; ``after`` skips the events a watcher has already shown.
JOB_EVENTS = text(
    """
    SELECT id, attempt, kind, at, worker, error, traceback, detail
      FROM job_events
     WHERE job_id = CAST(:job_id AS uuid) AND id > :after
     ORDER BY at, id
    """
)

#: What a watcher polls: the row's live state and the database's clock.
WATCH_JOB = text(
    """
    SELECT intent_key, status, progress, coalesce(retry_count, 0) AS retry_count, max_retries,
           error_message, result, executed_at, completed_at, run_at, worker, now() AS db_now
      FROM job_executions
     WHERE id = CAST(:job_id AS uuid)
    """
)

#: Finished jobs a bulk retry would put back, oldest first.
RETRY_CANDIDATES = text(
    f"""
    SELECT j.id::text AS id, j.intent_key, j.intent_params, j.status, j.created_at,
           j.error_message, j.params_dropped
      FROM job_executions j
     WHERE {_JOB_FILTERS}
       AND j.status IN ('failed', 'cancelled')
     ORDER BY j.created_at, j.id
     LIMIT :limit
    """
).bindparams(bindparam("statuses", type_=_TEXTS))

def list_jobs(conn, where: JobFilter, *, limit: int, offset: int = 0) -> list[dict[str, Any]]:
    rows = conn.execute(LIST_JOBS, {**where.params(), "limit": limit, "offset": offset})
    return [dict(r) for r in rows.mappings()]


def list_jobs_after(conn, where: JobFilter, *, limit: int, cursor_at: dt.datetime | None = None,
                    cursor_id: str | None = None) -> list[dict[str, Any]]:
    rows = conn.execute(LIST_JOBS_AFTER, {**where.params(), "limit": limit,
                                          "cursor_at": cursor_at, "cursor_id": cursor_id})
    return [dict(r) for r in rows.mappings()]


def find_jobs_by_prefix(conn, lo: str, hi: str) -> list[dict[str, Any]]:
    """At most two jobs whose ids lie in ``[lo, hi]`` (two means the prefix is ambiguous)."""
    return [dict(r) for r in conn.execute(FIND_JOBS_BY_ID_RANGE, {"lo": lo, "hi": hi}).mappings()]


def find_jobs_by_idempotency_key(conn, key: str, *, tenant_id: str | None,
                                 limit: int) -> list[dict[str, Any]]:
    rows = conn.execute(FIND_JOBS_BY_IDEMPOTENCY_KEY,
                        {"key": key, "tenant_id": tenant_id, "limit": limit})
    return [dict(r) for r in rows.mappings()]


def job_events(conn, job_id: str, *, after: int = 0) -> list[dict[str, Any]]:
    rows = conn.execute(JOB_EVENTS, {"job_id": job_id, "after": after})
    return [dict(r) for r in rows.mappings()]


def watch_job(conn, job_id: str) -> dict[str, Any] | None:
    row = conn.execute(WATCH_JOB, {"job_id": job_id}).mappings().first()
    return dict(row) if row else None


def retry_candidates(conn, where: JobFilter, *, limit: int) -> list[dict[str, Any]]:
    rows = conn.execute(RETRY_CANDIDATES, {**where.params(), "limit": limit})
    return [dict(r) for r in rows.mappings()]


# --- for handlers (through their context, under their tenant's row-level security) ----------

#: A job's children, oldest first.
CHILDREN = text(
    """
    SELECT id::text AS id, intent_key, status, progress, result, error_message
      FROM job_executions WHERE parent_id = CAST(:parent AS uuid)
     ORDER BY created_at, id
    """
)

#: A page of a job's children (a broadcast's), oldest first, and their counts by status.
CHILDREN_PAGE = text(
    """
    SELECT id::text AS id, intent_key, status, progress, error_message, created_at
      FROM job_executions WHERE parent_id = CAST(:parent AS uuid)
     ORDER BY created_at, id
     LIMIT :limit
    """
)
CHILDREN_BY_STATUS = text(
    """
    SELECT status, count(*) AS n FROM job_executions WHERE parent_id = CAST(:parent AS uuid)
     GROUP BY status ORDER BY status
    """
)

#: One job's status.
JOB_STATUS = text("SELECT status FROM job_executions WHERE id = CAST(:id AS uuid)")


def children(conn, parent_id: str) -> list[dict[str, Any]]:
    return [dict(r) for r in conn.execute(CHILDREN, {"parent": parent_id}).mappings()]


def job_status(conn, job_id: str) -> str | None:
    return conn.execute(JOB_STATUS, {"id": job_id}).scalar()


def children_page(conn, parent_id: str, *, limit: int) -> tuple[list[dict[str, Any]],
                                                              dict[str, int]]:
    """The first ``limit`` children of a job, and how many it has in each status."""
    rows = [dict(r) for r in conn.execute(CHILDREN_PAGE, {"parent": parent_id,
                                                          "limit": limit}).mappings()]
    counts = {r.status: r.n for r in conn.execute(CHILDREN_BY_STATUS, {"parent": parent_id})}
    return rows, counts
