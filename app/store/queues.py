"""What the console's Queues page reads: each queue's window, its jobs handed over and not
started, the academies with work ready, the oldest wait, the last minute's rate, and the share
of the queue each ready academy is getting (its weight over the ready academies' weights, as
jobq_feed's start-time fair order gives it). Every count stops at COUNT_CAP."""

from __future__ import annotations

from typing import Any

from sqlalchemy import text

from app.store.waiting import COUNT_CAP

#: One queue: its window, what is handed over, ready academies, the oldest due job's wait and
#: the jobs that finished in the last minute (each on its own index).
QUEUE_OVERVIEW = text(
    f"""
    SELECT (SELECT window_size FROM fair_clock WHERE queue = :queue) AS window_size,
           (SELECT count(*) FROM (SELECT 1 FROM job_executions
                                   WHERE queue = :queue AND status = 'pending'
                                     AND published_at IS NOT NULL LIMIT {COUNT_CAP}) f)
               AS in_flight,
           (SELECT count(*) FROM (SELECT 1 FROM job_executions
                                   WHERE queue = :queue AND status = 'processing'
                                   LIMIT {COUNT_CAP}) r) AS running,
           (SELECT count(*) FROM fair_queue WHERE queue = :queue AND ready) AS ready_academies,
           (SELECT extract(epoch FROM now() - min(coalesce(run_at, created_at)))::float8
              FROM (SELECT run_at, created_at FROM job_executions
                     WHERE status = 'pending' AND queue = :queue
                       AND coalesce(run_at, created_at) <= now()
                     ORDER BY coalesce(run_at, created_at) LIMIT 1) o) AS oldest_wait_s,
           (SELECT count(*) FROM job_executions
             WHERE status IN ('completed', 'failed', 'cancelled')
               AND completed_at >= now() - interval '1 minute' AND queue = :queue)
               AS finished_last_minute
    """
)

#: The ready academies of a queue in fair order (lowest virtual time first), each with its
#: weight, its share of the queue among them, and its jobs running or handed over there.
QUEUE_SHARES = text(
    """
    WITH ready AS (
        SELECT fq.tenant_id, fq.vtime, t.name, t.weight, t.status
          FROM fair_queue fq JOIN tenants t ON t.id = fq.tenant_id
         WHERE fq.queue = :queue AND fq.ready AND t.status = 'active'
    )
    SELECT r.tenant_id::text AS tenant_id, r.name, r.weight, r.vtime,
           r.weight / nullif(sum(r.weight) OVER (), 0) AS share,
           (SELECT count(*) FROM job_executions je
             WHERE je.tenant_id = r.tenant_id AND je.queue = :queue
               AND (je.status = 'processing'
                    OR (je.status = 'pending' AND je.published_at IS NOT NULL))) AS busy
      FROM ready r
     ORDER BY r.vtime, r.name
     LIMIT :limit
    """
)


def overview(conn, queue: str) -> dict[str, Any]:
    return dict(conn.execute(QUEUE_OVERVIEW, {"queue": queue}).mappings().one())


def shares(conn, queue: str, *, limit: int) -> list[dict[str, Any]]:
    return [dict(r) for r in conn.execute(QUEUE_SHARES, {"queue": queue,
                                                         "limit": limit}).mappings()]
