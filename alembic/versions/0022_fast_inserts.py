"""Jobs a plain INSERT adds to a queue where nobody waits skip the fair queue.

Where academies send a job or two at a time (the product's usual load, and the pressure
benchmark's), each job wrote its academy's ``fair_queue`` row twice: ready on insert, and its
virtual time (and not ready) when a feeder's look picked it. ``ready`` and ``vtime`` are indexed,
so each write is a new row version and a new entry in both of the table's indexes, and the
primary key's uniqueness check on every later write walks every version a held xmin horizon
keeps: after two minutes of a transaction idle with an XID at 50 jobs/s over 8 academies, 1,545
buffers for the insert trigger's upsert and 1,625 for the pick's (auto_explain; 1 to 10 before
the horizon was held). Nobody is ahead of such a job, so its academy's turn is not in question:
the insert trigger now tells the queue's feeder the job ids (``NOTIFY jobq_fast``), and the
feeder stamps and sends them while its window has room (one small UPDATE, no look), flagging
ready what does not fit. A (queue, tenant) row is still made, not ready, the first time, so the
sweep's full wake finds jobs no feeder heard (a feeder dying in between; a feeder that takes a
queue's lead flags them at once). Only while a feeder leads the queue: its advisory lock is now
``jobq_feed_lock(queue)``, computed in SQL, so the trigger can ask.

Revision ID: 0022_fast_inserts
Revises: 0021_in_flight_by_published
Create Date: 2026-12-07 13:20:00
"""

from __future__ import annotations

from alembic import op

revision = "0022_fast_inserts"
down_revision = "0021_in_flight_by_published"
branch_labels = None
depends_on = None

NEW = r"""
-- The advisory lock (session, exclusive) a queue's leading feeder holds (app.run.feeder).
CREATE OR REPLACE FUNCTION jobq_feed_lock(p_queue text) RETURNS bigint
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT (1785684593::bigint << 32) | (hashtext('jobq-feed:' || p_queue)::bigint & 4294967295)
$$;

-- Flag each (queue, tenant) of the given jobs ready (one row per job: queue, tenant, due); wake
-- its feeder. A job due before the tenant's feed_from (a long transaction's, a run_at in the
-- past) lowers it, so the feeder's pick reaches it (0017).
CREATE OR REPLACE FUNCTION jobq_fair_flag(p_queue text[], p_tenant uuid[], p_due timestamptz[])
RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path FROM CURRENT AS $$
DECLARE q text;
BEGIN
    FOR q IN
        WITH flagged AS (
            INSERT INTO fair_queue AS f (queue, tenant_id, vtime, ready, feed_from)
            SELECT n.queue, n.tenant_id,
                   coalesce((SELECT c.vclock FROM fair_clock c WHERE c.queue = n.queue), 0) - 1e-6,
                   true, n.due
              FROM (SELECT u.queue, u.tenant_id, min(u.due) AS due
                      FROM unnest(p_queue, p_tenant, p_due) AS u(queue, tenant_id, due)
                     GROUP BY u.queue, u.tenant_id) n
            ON CONFLICT (queue, tenant_id) DO UPDATE
               SET ready = true,
                   vtime = CASE WHEN f.ready THEN f.vtime
                                ELSE greatest(f.vtime, excluded.vtime) END,
                   readied_at = CASE WHEN f.ready THEN f.readied_at ELSE clock_timestamp() END,
                   feed_from = least(f.feed_from, excluded.feed_from)
             WHERE NOT f.ready OR excluded.feed_from < f.feed_from
            RETURNING f.queue
        )
        SELECT DISTINCT queue FROM flagged
    LOOP
        PERFORM pg_notify('jobq_feed', q);
    END LOOP;
END $$;

-- The same for jobs by id, those still pending and unpublished (a feeder's window was full).
CREATE OR REPLACE FUNCTION jobq_fair_flag_jobs(p_ids uuid[]) RETURNS void
LANGUAGE sql SECURITY DEFINER SET search_path FROM CURRENT AS $$
    SELECT jobq_fair_flag(array_agg(j.queue), array_agg(j.tenant_id),
                          array_agg(coalesce(j.run_at, j.created_at)))
      FROM job_executions j
     WHERE j.id = ANY(p_ids) AND j.status = 'pending' AND j.published_at IS NULL
       AND j.queue IS NOT NULL
$$;

-- New rows waiting for a feeder (0022). A statement of a few rows, due now, of active academies
-- without caps, in a queue where nobody is ready and a feeder leads, skips the fair queue: nobody is ahead of it,
-- so its feeder is told the jobs' ids (``jobq_fast``) and hands them to the broker while its
-- window has room, without a look and without writing fair_queue (two row versions a job
-- before: ready on insert, picked; each a new entry in both of its indexes, which a held
-- xmin horizon keeps and every later write of the row walks). Their (queue, tenant) row is
-- made if missing, not ready: should no feeder hear them, the sweep's full wake flags it. The
-- rest are flagged ready, as before (jobq_fair_flag).
CREATE OR REPLACE FUNCTION jobq_fair_flag_inserted() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path FROM CURRENT AS $$
DECLARE
    waiting int;
    fast uuid[] := '{}';
    r record;
BEGIN
    SELECT count(*) INTO waiting FROM jobq_new_rows n
     WHERE n.status = 'pending' AND n.published_at IS NULL AND n.queue IS NOT NULL;
    IF waiting = 0 THEN
        RETURN NULL;
    END IF;
    IF waiting <= 32 THEN
        FOR r IN
            SELECT n.queue, array_agg(n.id ORDER BY n.created_at, n.id) AS ids
              FROM jobq_new_rows n
              JOIN tenants t ON t.id = n.tenant_id
             WHERE n.status = 'pending' AND n.published_at IS NULL AND n.queue IS NOT NULL
               AND (n.run_at IS NULL OR n.run_at <= now())
               AND t.status = 'active' AND t.max_running IS NULL
               AND NOT EXISTS (SELECT 1 FROM tenant_queue_limits l
                                WHERE l.tenant_id = n.tenant_id AND l.queue = n.queue)
               AND NOT EXISTS (SELECT 1 FROM fair_queue f WHERE f.queue = n.queue AND f.ready)
               -- and a feeder leads the queue to hear it (its lock cannot be shared now)
               AND CASE WHEN pg_try_advisory_lock_shared(jobq_feed_lock(n.queue))
                        THEN NOT pg_advisory_unlock_shared(jobq_feed_lock(n.queue))
                        ELSE true END
             GROUP BY n.queue
        LOOP
            fast := fast || r.ids;
            PERFORM pg_notify('jobq_fast', r.queue || ' ' || array_to_string(r.ids, ','));
        END LOOP;
        INSERT INTO fair_queue (queue, tenant_id, vtime, ready, feed_from)
        SELECT DISTINCT ON (n.queue, n.tenant_id) n.queue, n.tenant_id,
               coalesce((SELECT c.vclock FROM fair_clock c WHERE c.queue = n.queue), 0) - 1e-6,
               false, coalesce(n.run_at, n.created_at)
          FROM jobq_new_rows n
         WHERE n.id = ANY(fast)
           AND NOT EXISTS (SELECT 1 FROM fair_queue f
                            WHERE f.queue = n.queue AND f.tenant_id = n.tenant_id)
        ON CONFLICT DO NOTHING;
    END IF;
    PERFORM jobq_fair_flag(array_agg(n.queue), array_agg(n.tenant_id),
                           array_agg(coalesce(n.run_at, n.created_at)))
       FROM jobq_new_rows n
      WHERE n.status = 'pending' AND n.published_at IS NULL AND n.queue IS NOT NULL
        AND n.id <> ALL(fast)
     HAVING count(*) > 0;
    RETURN NULL;
END $$;
"""

OLD = r"""
CREATE OR REPLACE FUNCTION jobq_fair_flag_inserted() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path FROM CURRENT AS $$
DECLARE q text;
BEGIN
    FOR q IN
        WITH flagged AS (
            INSERT INTO fair_queue AS f (queue, tenant_id, vtime, ready, feed_from)
            SELECT n.queue, n.tenant_id,
                   coalesce((SELECT c.vclock FROM fair_clock c WHERE c.queue = n.queue), 0) - 1e-6,
                   true, n.due
              FROM (SELECT queue, tenant_id, min(coalesce(run_at, created_at)) AS due
                      FROM jobq_new_rows
                     WHERE status = 'pending' AND published_at IS NULL AND queue IS NOT NULL
                     GROUP BY queue, tenant_id) n
            ON CONFLICT (queue, tenant_id) DO UPDATE
               SET ready = true,
                   vtime = CASE WHEN f.ready THEN f.vtime
                                ELSE greatest(f.vtime, excluded.vtime) END,
                   readied_at = CASE WHEN f.ready THEN f.readied_at ELSE clock_timestamp() END,
                   feed_from = least(f.feed_from, excluded.feed_from)
             WHERE NOT f.ready OR excluded.feed_from < f.feed_from
            RETURNING f.queue
        )
        SELECT DISTINCT queue FROM flagged
    LOOP
        PERFORM pg_notify('jobq_feed', q);
    END LOOP;
    RETURN NULL;
END $$;
"""


def upgrade() -> None:
    op.execute(NEW)
    # Security definers, as jobq_feed: the engine's, not a handler's session's to call.
    for signature in ("jobq_fair_flag(text[], uuid[], timestamptz[])", "jobq_fair_flag_jobs(uuid[])"):
        op.execute(f"REVOKE ALL ON FUNCTION {signature} FROM PUBLIC")


def downgrade() -> None:
    op.execute(OLD)
    op.execute("DROP FUNCTION IF EXISTS jobq_fair_flag_jobs(uuid[])")
    op.execute("DROP FUNCTION IF EXISTS jobq_fair_flag(text[], uuid[], timestamptz[])")
    op.execute("DROP FUNCTION IF EXISTS jobq_feed_lock(text)")
