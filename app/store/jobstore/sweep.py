"""The sweep: due pending jobs that no broker holds and no feeder will publish (rows written
without a queue, messages a broker lost), idle tenants ready again, and pending jobs the engine
cannot run, refused."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import bindparam, text

from app.store.jobstore.binds import IDS

#: Due pending jobs that no broker holds and no fairness feeder will publish: rows inserted
#: without a queue (plain SQL: the sweep routes them to their intent's queue, where the
#: feeder takes them in their turn), rows published into a Redis that has since lost its data
#: (``:broker_since``, see app.beat.sweep.broker_epoch) or so long ago without starting that
#: the message must be lost, and pending rows of a deleted tenant (refused: those waiting in a
#: queue are read per (queue, tenant) of the fair queue on ix_job_executions_ready, exactly
#: its leading columns; its unrouted rows and lost messages are the first two parts' finds,
#: and a worker that gets one of its messages refuses it at the claim). On the tenant's own
#: index it read the tenant's whole history, and the planner (which cannot see that few of it
#: are pending) ANDed it with the whole backlog's ix_job_executions_due: the backlog read
#: once per deleted tenant, every second. With their
#: tenant's status; a suspended tenant's jobs are held (left as they are until it is resumed).
#: Each part is read on its own small index: the backlog the feeder owns is never scanned.
#: (Published rows in order of ``published_at``, on ix_job_executions_published: without the
#: order the planner, which sees most rows of the table published long ago, walks the whole
#: backlog on ix_job_executions_due looking for them; ``greatest`` ignores a NULL
#: ``:broker_since``.) The candidates are read once, before the rows are joined and locked:
#: inline, a planner without fresh statistics (autovacuum off, or a table that just grew) ran
#: the three reads once per due row of the backlog, quadratic, 5.8 s a sweep behind 3,000
#: waiting jobs, every second (``tests/integration/test_schema.py``). Locked until the sweep
#: commits.
LOCK_DUE = text(
    """
    WITH candidates AS MATERIALIZED (
            (SELECT id FROM job_executions
              WHERE status = 'pending' AND queue IS NULL
                AND coalesce(run_at, created_at) <= now()
              ORDER BY coalesce(run_at, created_at) LIMIT :batch)
            UNION ALL
            (SELECT id FROM job_executions
              WHERE status = 'pending' AND published_at IS NOT NULL
                AND published_at < greatest(now() - make_interval(secs => :republish_after),
                                            CAST(:broker_since AS timestamptz))
              ORDER BY published_at LIMIT :batch)
            UNION ALL
            (SELECT d.id FROM tenants dt
               JOIN fair_queue f ON f.tenant_id = dt.id
               CROSS JOIN LATERAL (SELECT id FROM job_executions
                                    WHERE queue = f.queue AND tenant_id = f.tenant_id
                                      AND status = 'pending' AND published_at IS NULL
                                    LIMIT :batch) d
              WHERE dt.status = 'deleted' LIMIT :batch))
    SELECT j.id::text, j.tenant_id::text, j.intent_key, j.intent_params, j.queue,
           j.published_at IS NOT NULL AS republish,
           coalesce(j.published_at < CAST(:broker_since AS timestamptz), false) AS lost,
           t.status AS tenant_status
      FROM job_executions j
      JOIN tenants t ON t.id = j.tenant_id AND t.status <> 'suspended'
     WHERE j.id = ANY (ARRAY(SELECT id FROM candidates))
       AND j.status = 'pending'
       AND coalesce(j.run_at, j.created_at) <= now()
     ORDER BY coalesce(j.run_at, j.created_at)
     LIMIT :batch
       FOR UPDATE OF j SKIP LOCKED
    """
)


@dataclass(frozen=True)
class Due:
    id: str
    tenant_id: str
    intent_key: str
    intent_params: Any
    queue: str | None
    republish: bool
    #: Published into a Redis that has since lost its data.
    lost: bool
    tenant_status: str


def lock_due(conn, *, batch: int, republish_after: float,
             broker_since: str | None = None) -> list[Due]:
    rows = conn.execute(LOCK_DUE, {"batch": batch, "republish_after": republish_after,
                                   "broker_since": broker_since})
    return [Due(*r) for r in rows]


#: The database's now, and how many pending jobs were handed to the broker before it (a broker
#: that lost its data lost their messages).
PUBLISHED_PENDING = text(
    """
    SELECT now(), count(*) FROM job_executions
     WHERE status = 'pending' AND published_at IS NOT NULL
    """
)

#: Give rows inserted without a queue their intent's queue: the update's trigger puts them in
#: the fair queue (migration 0005).
ROUTE = text(
    "UPDATE job_executions SET queue = :queue WHERE id = ANY(:ids) AND queue IS NULL"
).bindparams(bindparam("ids", type_=IDS))


def route(conn, ids: Sequence[str], queue: str) -> None:
    if ids:
        conn.execute(ROUTE, {"ids": list(ids), "queue": queue})


#: (queue, tenant)s marked idle that have a due unpublished job again (a ``run_at`` or a
#: retry's backoff came due, a tenant was resumed): ready once more, at the queue's clock.
#: ``newly``: all of them (:data:`FLAG_DUE`, read on the backlog's index: every due job of it),
#: or those whose jobs came due in the last ``:lookback`` seconds (:data:`FLAG_NEWLY_DUE`, on
#: ix_job_executions_run_at: only jobs that wait for a time, as few as came due).
_FLAG = """
    WITH due AS (
        SELECT f.queue, f.tenant_id FROM fair_queue f
          JOIN tenants t ON t.id = f.tenant_id AND t.status = 'active'
         WHERE NOT f.ready AND {which}
           FOR UPDATE OF f SKIP LOCKED
    ), flagged AS (
        UPDATE fair_queue f
           SET ready = true, readied_at = clock_timestamp(),
               vtime = greatest(f.vtime, coalesce(
                   (SELECT c.vclock FROM fair_clock c WHERE c.queue = f.queue), 0) - 1e-6)
          FROM due WHERE f.queue = due.queue AND f.tenant_id = due.tenant_id
        RETURNING f.queue
    )
    SELECT queue, count(*), pg_notify('jobq_feed', queue) FROM flagged GROUP BY queue
"""
FLAG_DUE = text(_FLAG.format(which="""EXISTS (
               SELECT 1 FROM job_executions j
                WHERE j.queue = f.queue AND j.tenant_id = f.tenant_id
                  AND j.status = 'pending' AND j.published_at IS NULL
                  AND coalesce(j.run_at, j.created_at) <= now())"""))
FLAG_NEWLY_DUE = text(_FLAG.format(which="""(f.queue, f.tenant_id) IN (
               SELECT j.queue, j.tenant_id FROM job_executions j
                WHERE j.status = 'pending' AND j.run_at IS NOT NULL
                  AND j.published_at IS NULL
                  AND j.run_at > now() - make_interval(secs => :lookback)
                  AND j.run_at <= now())"""))


#: Every tenant's fair pick starts from its first waiting job again (``feed_from``, 0017): a job
#: its pick went past (locked by another transaction as the pick went by, say) is reached.
#: (A row a feeder's look holds this instant is set back on the next full look.)
RESET_FEED_FROM = text(
    """
    UPDATE fair_queue f SET feed_from = '-infinity'
      FROM (SELECT queue, tenant_id FROM fair_queue WHERE feed_from > '-infinity'
               FOR UPDATE SKIP LOCKED) r
     WHERE f.queue = r.queue AND f.tenant_id = r.tenant_id
    """
)


def flag_due(conn, *, newly: float | None = None) -> dict[str, int]:
    """Queue -> how many of its idle tenants were ready again; ``newly``: only those whose jobs
    came due in the last ``newly`` seconds (what the sweep does on most rounds). The full look
    also sets every tenant's pick back to its first waiting job."""
    if newly is None:
        conn.execute(RESET_FEED_FROM)
        return {r[0]: r[1] for r in conn.execute(FLAG_DUE)}
    return {r[0]: r[1] for r in conn.execute(FLAG_NEWLY_DUE, {"lookback": newly})}


#: A pending job the engine cannot run (its intent is unknown, its tenant deleted): failed with
#: the reason.
REFUSE_PENDING = text(
    """
    WITH refused AS (
        UPDATE job_executions
           SET status = 'failed', completed_at = now(), error_message = :error,
               updated_at = now()
         WHERE id = CAST(:id AS uuid) AND status = 'pending'
        RETURNING id, coalesce(retry_count, 0) AS retries
    ), event AS (
        INSERT INTO job_events (job_id, attempt, kind, error)
        SELECT id, retries, 'refused', :error FROM refused
    )
    SELECT count(*) FROM refused
    """
)


def refuse_pending(conn, job_id: str, error: str) -> bool:
    row = conn.execute(REFUSE_PENDING, {"id": job_id, "error": error}).first()
    return bool(row and row[0])
