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

from app.core import sketch

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

#: The filters every job listing shares. A NULL parameter means "no filter"; PostgreSQL folds
#: those branches away when it plans the statement, so each listing still uses its index.
_JOB_FILTERS = """
       (CAST(:tenant_id AS uuid) IS NULL OR j.tenant_id = CAST(:tenant_id AS uuid))
   AND (CAST(:statuses AS text[]) IS NULL OR j.status = ANY(CAST(:statuses AS text[])))
   AND (CAST(:intent AS text) IS NULL OR j.intent_key = CAST(:intent AS text))
   AND (CAST(:intent_like AS text) IS NULL OR j.intent_key LIKE CAST(:intent_like AS text))
   AND (CAST(:since_seconds AS float8) IS NULL
        OR j.created_at >= now() - make_interval(secs => CAST(:since_seconds AS float8)))
   AND (CAST(:since_at AS timestamptz) IS NULL OR j.created_at >= CAST(:since_at AS timestamptz))
   AND (CAST(:until_seconds AS float8) IS NULL
        OR j.created_at < now() - make_interval(secs => CAST(:until_seconds AS float8)))
   AND (CAST(:until_at AS timestamptz) IS NULL OR j.created_at < CAST(:until_at AS timestamptz))
   AND (CAST(:queue AS text) IS NULL OR j.queue = CAST(:queue AS text))
"""


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

#: For the statistics, in the caller's transaction: no JIT (compiling costs about 100 ms a
#: statement, more than it saves on a day's rows) and room to aggregate a day's rows in memory.
_FOR_STATISTICS = text("SELECT set_config('jit', 'off', true), "
                       "set_config('work_mem', '64MB', true)")


#: The window's jobs in one read, grouped three ways: by intent, state and run-time bucket
#: (counts, retries, the longest run; completed runs' durations as log buckets, app.core.sketch);
#: by intent and wait bucket (due to start); by tenant, state and wait bucket. Hash aggregates
#: over one scan, each row's buckets computed once (OFFSET 0 keeps the inner query whole): no
#: sort of the window's rows (a day of a busy table is a few hundred thousand), and the
#: percentiles come from the buckets, within app.core.sketch.RELATIVE_ERROR.
WINDOW_STATS = text(
    f"""
    SELECT grouping(intent_key, tenant_id, status, run_b, wait_b) AS g,
           intent_key, tenant_id::text AS tenant_id, status, run_b, wait_b,
           count(*) AS n, coalesce(sum(retry_count), 0) AS retries, max(run_s) AS run_max
      FROM (
        SELECT r.*, {sketch.SQL_BUCKET.format(seconds="r.run_s")} AS run_b,
               {sketch.SQL_BUCKET.format(seconds="r.wait_s")} AS wait_b
          FROM (SELECT j.intent_key, j.tenant_id, j.status, j.retry_count,
                       CASE WHEN j.status = 'completed'
                            THEN date_part('epoch', j.completed_at - j.executed_at) END AS run_s,
                       date_part('epoch', j.executed_at - coalesce(j.run_at, j.created_at))
                           AS wait_s
                  FROM job_executions j
                 WHERE {_JOB_FILTERS}
                OFFSET 0) r
      ) s
     GROUP BY GROUPING SETS ((intent_key, status, run_b), (intent_key, wait_b),
                             (tenant_id, status, wait_b))
    """
).bindparams(bindparam("statuses", type_=_TEXTS))

#: Tenants' names by id.
NAMES = text("SELECT id::text, name FROM tenants WHERE id = ANY(CAST(:ids AS uuid[]))")

#: Which grouping set a WINDOW_STATS row belongs to (``grouping()`` of its five columns: a
#: bit set for each column the set leaves out, the first column the highest bit).
_BY_INTENT, _BY_INTENT_WAIT, _BY_TENANT = 0b01001, 0b01110, 0b10010
_STATES = {"pending": "pending", "processing": "processing", "completed": "completed",
           "failed": "failed", "cancelled": "cancelled", "awaiting_approval": "awaiting"}


def _stats_row(key: str | None) -> dict[str, Any]:
    return {"intent_key": key, "total": 0, **dict.fromkeys(_STATES.values(), 0), "retries": 0,
            "run_max": None, "_run": {}, "_wait": {}}


def _finish(row: dict[str, Any]) -> dict[str, Any]:
    run, wait = row.pop("_run"), row.pop("_wait")
    row.update(run_p50=sketch.percentile(run, 0.5), run_p95=sketch.percentile(run, 0.95),
               wait_p50=sketch.percentile(wait, 0.5), wait_p95=sketch.percentile(wait, 0.95))
    return row


def window_stats(conn, where: JobFilter, *, tenants: int
                 ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Counts, run times and failure rates per intent and (intent_key None) over all of them,
    and the ``tenants`` tenants whose jobs waited longest from due to start (p95), with their
    counts. Run time is the last attempt's, start to finish; wait is from due to that start."""
    conn.execute(_FOR_STATISTICS)
    intents: dict[str, dict[str, Any]] = {}
    by_tenant: dict[str, dict[str, Any]] = {}
    for r in conn.execute(WINDOW_STATS, where.params()).mappings():
        if r["g"] == _BY_TENANT:
            t = by_tenant.setdefault(r["tenant_id"], {"tenant_id": r["tenant_id"], "total": 0,
                                                      "pending": 0, "_wait": {}})
            t["total"] += r["n"]
            t["pending"] += r["n"] if r["status"] == "pending" else 0
            if r["wait_b"] is not None:
                t["_wait"][r["wait_b"]] = t["_wait"].get(r["wait_b"], 0) + r["n"]
            continue
        row = intents.setdefault(r["intent_key"], _stats_row(r["intent_key"]))
        if r["g"] == _BY_INTENT:
            row["total"] += r["n"]
            row["retries"] += r["retries"]
            if r["status"] in _STATES:
                row[_STATES[r["status"]]] += r["n"]
            if r["run_max"] is not None:
                row["run_max"] = max(row["run_max"] or 0.0, r["run_max"])
            if r["run_b"] is not None:
                row["_run"][r["run_b"]] = r["n"]
        elif r["g"] == _BY_INTENT_WAIT and r["wait_b"] is not None:
            row["_wait"][r["wait_b"]] = r["n"]
    overall = _stats_row(None)
    for row in intents.values():
        for name in ("total", "retries", *_STATES.values()):
            overall[name] += row[name]
        if row["run_max"] is not None:
            overall["run_max"] = max(overall["run_max"] or 0.0, row["run_max"])
        overall["_run"] = sketch.merge(overall["_run"], row["_run"])
        overall["_wait"] = sketch.merge(overall["_wait"], row["_wait"])
    rows = [*(_finish(intents[k]) for k in sorted(intents)), _finish(overall)]
    waits = []
    for t in by_tenant.values():
        h = t.pop("_wait")
        t.update(wait_p50=sketch.percentile(h, 0.5), wait_p95=sketch.percentile(h, 0.95))
        waits.append(t)
    waits.sort(key=lambda t: (t["wait_p95"] is None, -(t["wait_p95"] or 0), -t["total"]))
    top = waits[:tenants]
    names = dict(conn.execute(NAMES, {"ids": [t["tenant_id"] for t in top]}).all()) if top else {}
    return rows, [{"tenant_id": t["tenant_id"], "name": names.get(t["tenant_id"]),
                   "total": t["total"], "pending": t["pending"], "wait_p50": t["wait_p50"],
                   "wait_p95": t["wait_p95"]} for t in top]


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
