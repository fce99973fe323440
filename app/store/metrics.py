"""What /metrics reads from the table: backlogs by state, queue and tenant, the oldest due job
per queue, and finished jobs with their run times per intent over a window. Each is one grouped
statement over a partial index (the live states) or the finished-at index (the window)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import text

#: Upper bounds (seconds) of the run-time histogram's buckets.
RUN_TIME_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0)

#: Jobs waiting or running by state, queue and tenant; only the ``:top`` tenants with the most
#: such jobs are named, the others summed as ``other``, so the labels stay bounded.
LIVE_JOBS = text(
    """
    WITH c AS (
        SELECT status, coalesce(queue, 'none') AS queue, tenant_id, count(*) AS n
          FROM job_executions
         WHERE status IN ('pending', 'processing', 'awaiting_approval')
         GROUP BY 1, 2, 3
    ), top AS (
        SELECT tenant_id FROM c GROUP BY tenant_id ORDER BY sum(n) DESC, tenant_id LIMIT :top
    )
    SELECT c.status, c.queue,
           CASE WHEN top.tenant_id IS NULL THEN 'other' ELSE c.tenant_id::text END AS tenant,
           CAST(sum(c.n) AS bigint) AS n
      FROM c LEFT JOIN top ON top.tenant_id = c.tenant_id
     GROUP BY 1, 2, 3
    """
)

#: Seconds the oldest due pending job of each queue has waited.
OLDEST_PENDING = text(
    """
    SELECT coalesce(queue, 'none') AS queue,
           CAST(extract(epoch FROM now() - min(coalesce(run_at, created_at))) AS float8) AS age
      FROM job_executions
     WHERE status = 'pending' AND coalesce(run_at, created_at) <= now()
     GROUP BY 1
    """
)

_BUCKET_COUNTS = ",\n".join(
    f"count(*) FILTER (WHERE extract(epoch FROM completed_at - executed_at) <= {b}) AS le_{i}"
    for i, b in enumerate(RUN_TIME_BUCKETS))

#: Jobs finished within the window, per intent and end state, with their last attempt's run
#: time as cumulative histogram buckets.
FINISHED = text(
    f"""
    SELECT intent_key, status, count(*) AS n,
           CAST(coalesce(sum(extract(epoch FROM completed_at - executed_at)), 0) AS float8)
               AS run_sum,
           count(executed_at) AS runs,
           {_BUCKET_COUNTS}
      FROM job_executions
     WHERE status IN ('completed', 'failed', 'cancelled')
       AND completed_at >= now() - make_interval(secs => :window)
     GROUP BY 1, 2
    """
)


def live_jobs(conn, *, top: int) -> list[dict[str, Any]]:
    return [dict(r) for r in conn.execute(LIVE_JOBS, {"top": top}).mappings()]


def oldest_pending(conn) -> dict[str, float]:
    return {r.queue: r.age for r in conn.execute(OLDEST_PENDING)}


def finished(conn, *, window: float) -> list[dict[str, Any]]:
    return [dict(r) for r in conn.execute(FINISHED, {"window": window}).mappings()]
