"""Each tenant's fair pick starts where its last one ended (``fair_queue.feed_from``), not at
the first entry of the ready-jobs index.

Under a transaction holding the xmin horizon (a forgotten session idle in a transaction, a long
report), the index entries of the jobs already handed out stay (their old row versions cannot be
removed) and the pick walked them all, for every tenant, on every look: a 3-minute hold at 50
jobs/s made the pick 46x dearer (50 -> 2,289 buffers a call, ``python -m bench pressure
--scenarios idle_tx``). ``feed_from`` is a second before the due time of the last job the tenant
was handed (the feeder's pick and the hand-on advance it, in the update that advances its
virtual time: no extra write), and the pick starts there. What comes due before it lowers it: a
new row (the insert trigger: a long transaction's, a ``run_at`` in the past) and a job put back
to pending (the update trigger: a lost run, a republish, a retry); the sweep's full look sets
every tenant's back once a minute, so a job passed over otherwise (one locked by another
transaction as the pick went past it) is reached within a minute.

Revision ID: 0017_feed_from
Revises: 0016_traceparent
Create Date: 2026-12-07 06:20:00
"""

from __future__ import annotations

from alembic import op

revision = "0017_feed_from"
down_revision = "0016_traceparent"
branch_labels = None
depends_on = None

FUNCTIONS = [
    """
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
END $$
""",
    """
CREATE OR REPLACE FUNCTION jobq_fair_flag_updated() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path FROM CURRENT AS $$
BEGIN
    INSERT INTO fair_queue AS f (queue, tenant_id, vtime, ready, feed_from)
    VALUES (NEW.queue, NEW.tenant_id,
            coalesce((SELECT c.vclock FROM fair_clock c WHERE c.queue = NEW.queue), 0) - 1e-6,
            true, coalesce(NEW.run_at, NEW.created_at))
    ON CONFLICT (queue, tenant_id) DO UPDATE
       SET ready = true,
           vtime = CASE WHEN f.ready THEN f.vtime ELSE greatest(f.vtime, excluded.vtime) END,
           readied_at = CASE WHEN f.ready THEN f.readied_at ELSE clock_timestamp() END,
           feed_from = least(f.feed_from, excluded.feed_from)
     WHERE NOT f.ready OR excluded.feed_from < f.feed_from;
    IF FOUND THEN
        PERFORM pg_notify('jobq_feed', NEW.queue);
    END IF;
    RETURN NULL;
END $$
""",
    """
CREATE OR REPLACE FUNCTION jobq_feed(p_queue text, p_n int)
RETURNS TABLE (id uuid, tenant_id uuid, intent_key text, intent_params jsonb)
LANGUAGE plpgsql SECURITY DEFINER SET search_path FROM CURRENT AS $$
#variable_conflict use_column
DECLARE
    f record;
    d record;
    clock float8;
    busy int;
    c_tenant uuid[] := '{}';
    c_start float8[] := '{}';
    c_weight float8[] := '{}';
    c_room int[] := '{}';
    c_from timestamptz[] := '{}';
    idle uuid[] := '{}';
    n int := 0;
BEGIN
    IF p_n <= 0 THEN
        RETURN;
    END IF;
    SELECT c.vclock INTO clock FROM fair_clock c WHERE c.queue = p_queue;
    IF NOT FOUND THEN
        INSERT INTO fair_clock (queue) VALUES (p_queue) ON CONFLICT DO NOTHING;
        clock := 0;
    END IF;
    -- The candidates: ready tenants in fair order, until n of them may take a job. A tenant
    -- that is not active stops being ready (the sweep flags it again when it is resumed); one
    -- at its cap is passed over and stays ready.
    FOR f IN
        -- On the ready tenants' index, in its order: a tenant's details are looked up as it
        -- comes (joined, the planner sorted every ready tenant first).
        SELECT fq.tenant_id, fq.vtime, fq.feed_from
          FROM fair_queue fq
         WHERE fq.queue = p_queue AND fq.ready
         ORDER BY fq.vtime, fq.readied_at DESC
           FOR UPDATE OF fq SKIP LOCKED
    LOOP
        SELECT t.status, t.weight, coalesce(l.max_running, t.max_running) AS cap,
               l.max_running IS NOT NULL AS per_queue
          INTO d
          FROM tenants t
          LEFT JOIN tenant_queue_limits l ON l.tenant_id = t.id AND l.queue = p_queue
         WHERE t.id = f.tenant_id;
        IF d.status <> 'active' THEN
            idle := idle || f.tenant_id;
            CONTINUE;
        END IF;
        IF d.cap IS NOT NULL THEN
            SELECT count(*) INTO busy FROM job_executions je
             WHERE je.tenant_id = f.tenant_id AND (NOT d.per_queue OR je.queue = p_queue)
               AND (je.status = 'processing'
                    OR (je.status = 'pending' AND je.published_at IS NOT NULL));
            CONTINUE WHEN busy >= d.cap;
        END IF;
        c_tenant := c_tenant || f.tenant_id;
        c_start := c_start || greatest(f.vtime, clock);
        c_weight := c_weight || d.weight;
        c_room := c_room || CASE WHEN d.cap IS NULL THEN p_n ELSE d.cap - busy END;
        c_from := c_from || f.feed_from;
        n := n + 1;
        EXIT WHEN n >= p_n;
    END LOOP;
    IF cardinality(idle) > 0 THEN
        UPDATE fair_queue SET ready = false
         WHERE queue = p_queue AND fair_queue.tenant_id = ANY (idle);
    END IF;
    IF n = 0 THEN
        RETURN;
    END IF;
    RETURN QUERY
    WITH c AS (
        SELECT u.tenant_id, u.start, u.weight, u.ord, u.feed_from,
               -- How many of its jobs could be among the n: those starting no later than the
               -- last candidate's first, plus what the candidates leave of n, within its cap.
               least(u.room, p_n, (p_n - n + 1)
                     + floor((c_start[n] - u.start) * u.weight)::int) AS lim
          FROM unnest(c_tenant, c_start, c_weight, c_room, c_from)
               WITH ORDINALITY AS u(tenant_id, start, weight, room, feed_from, ord)
    ), fetched AS (
        SELECT c.tenant_id, c.start, c.weight, c.ord, j.id, j.due,
               row_number() OVER (PARTITION BY c.tenant_id ORDER BY j.due, j.id) - 1 AS k
          FROM c CROSS JOIN LATERAL (
                SELECT je.id, coalesce(je.run_at, je.created_at) AS due
                  FROM job_executions je
                 WHERE je.queue = p_queue AND je.tenant_id = c.tenant_id
                   AND je.status = 'pending' AND je.published_at IS NULL
                   AND coalesce(je.run_at, je.created_at) >= c.feed_from
                   AND coalesce(je.run_at, je.created_at) <= now()
                 ORDER BY coalesce(je.run_at, je.created_at), je.id
                 LIMIT c.lim
                   FOR UPDATE OF je SKIP LOCKED) j
    ), picked AS (
        SELECT f.*, f.start + f.k / f.weight AS tag
          FROM fetched f
         ORDER BY f.start + f.k / f.weight, f.ord, f.k
         LIMIT p_n
    ), stamped AS (
        UPDATE job_executions u SET published_at = now()
          FROM picked p WHERE u.id = p.id
        RETURNING u.id, p.tenant_id, u.intent_key, u.intent_params, p.tag, p.ord, p.k
    ), advanced AS (
        UPDATE fair_queue fq
           SET vtime = g.start + g.taken / g.weight,
               feed_from = greatest(fq.feed_from, g.due - interval '1 second')
          FROM (SELECT p.tenant_id, min(p.start) AS start, min(p.weight) AS weight,
                       count(*) AS taken, max(p.due) AS due
                  FROM picked p GROUP BY p.tenant_id) g
         WHERE fq.queue = p_queue AND fq.tenant_id = g.tenant_id
        RETURNING g.start
    ), drained AS (
        -- Candidates with nothing due: no longer ready (the sweep flags them again when a
        -- later run_at or a retry's backoff comes due).
        UPDATE fair_queue fq SET ready = false
          FROM c
         WHERE fq.queue = p_queue AND fq.tenant_id = c.tenant_id
           AND NOT EXISTS (SELECT 1 FROM fetched f WHERE f.tenant_id = c.tenant_id)
        RETURNING 1
    ), clocked AS (
        UPDATE fair_clock fc SET vclock = m.start
          FROM (SELECT max(a.start) AS start FROM advanced a) m
         WHERE fc.queue = p_queue AND fc.vclock < m.start
        RETURNING 1
    )
    -- (drained and clocked run to completion unread, as every data-modifying WITH does.)
    SELECT s.id, s.tenant_id, s.intent_key, s.intent_params
      FROM stamped s
     ORDER BY s.tag, s.ord, s.k;
END $$
""",
    """
CREATE OR REPLACE FUNCTION jobq_hand_on(p_queue text, p_tenant uuid)
RETURNS TABLE (id uuid, tenant_id uuid, intent_key text, intent_params jsonb)
LANGUAGE plpgsql SECURITY DEFINER SET search_path FROM CURRENT AS $$
#variable_conflict use_column
DECLARE
    f record;
    d record;
    clock float8;
    busy int;
BEGIN
    -- Ready (it has jobs waiting). A feeder's look holding the row began before the slot was
    -- free (it saw the tenant at its cap): wait for it (one statement), then count again.
    -- Skipping the row left the next job to the feeder's next look, at the back of the queue.
    BEGIN
        SELECT fq.vtime, fq.feed_from INTO f FROM fair_queue fq
         WHERE fq.queue = p_queue AND fq.tenant_id = p_tenant AND fq.ready
           FOR UPDATE OF fq;
    EXCEPTION WHEN deadlock_detected OR lock_not_available THEN
        RETURN;  -- the outcome already written stands; the feeder hands the job out
    END;
    IF NOT FOUND THEN
        RETURN;
    END IF;
    SELECT coalesce(max(c.vclock), 0) INTO clock FROM fair_clock c WHERE c.queue = p_queue;
    -- Its turn: no other ready tenant would start before it (start tags as jobq_feed's).
    IF f.vtime > clock AND EXISTS (SELECT 1 FROM fair_queue o
                                    WHERE o.queue = p_queue AND o.ready
                                      AND o.vtime < f.vtime AND o.tenant_id <> p_tenant) THEN
        RETURN;
    END IF;
    SELECT t.status, t.weight, coalesce(l.max_running, t.max_running) AS cap,
           l.max_running IS NOT NULL AS per_queue
      INTO d
      FROM tenants t
      LEFT JOIN tenant_queue_limits l ON l.tenant_id = t.id AND l.queue = p_queue
     WHERE t.id = p_tenant;
    IF NOT FOUND OR d.status <> 'active' OR d.cap IS NULL THEN
        RETURN;
    END IF;
    SELECT count(*) INTO busy FROM job_executions je
     WHERE je.tenant_id = p_tenant AND (NOT d.per_queue OR je.queue = p_queue)
       AND (je.status = 'processing' OR (je.status = 'pending' AND je.published_at IS NOT NULL));
    IF busy >= d.cap THEN
        RETURN;
    END IF;
    RETURN QUERY
    WITH picked AS (
        SELECT je.id, coalesce(je.run_at, je.created_at) AS due
          FROM job_executions je
         WHERE je.queue = p_queue AND je.tenant_id = p_tenant
           AND je.status = 'pending' AND je.published_at IS NULL
           AND coalesce(je.run_at, je.created_at) >= f.feed_from
           AND coalesce(je.run_at, je.created_at) <= now()
         ORDER BY coalesce(je.run_at, je.created_at), je.id
         LIMIT d.cap - busy
           FOR UPDATE OF je SKIP LOCKED
    ), stamped AS (
        UPDATE job_executions u SET published_at = now()
          FROM picked p WHERE u.id = p.id
        RETURNING u.id, u.tenant_id, u.intent_key, u.intent_params, p.due
    ), advanced AS (
        UPDATE fair_queue fq
           SET vtime = greatest(fq.vtime, clock) + (SELECT count(*) FROM stamped) / d.weight,
               feed_from = greatest(fq.feed_from,
                                    (SELECT max(s.due) FROM stamped s) - interval '1 second')
         WHERE fq.queue = p_queue AND fq.tenant_id = p_tenant
           AND EXISTS (SELECT 1 FROM stamped)
        RETURNING 1
    )
    -- (advanced runs to completion unread, as every data-modifying WITH does.)
    SELECT s.id, s.tenant_id, s.intent_key, s.intent_params FROM stamped s ORDER BY s.due, s.id;
END $$
"""
]

def _before() -> list[str]:
    """The four functions as they were: the triggers of 0005, the feed of 0010, the hand-on of
    0015 (loaded from those migrations, not copied)."""
    import importlib.util
    from pathlib import Path

    def load(name: str):
        spec = importlib.util.spec_from_file_location(f"jobq_{name[:4]}",
                                                      Path(__file__).with_name(name))
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module

    triggers = [f.replace("CREATE FUNCTION", "CREATE OR REPLACE FUNCTION", 1)
                for f in load("0005_fairness.py").FUNCTIONS
                if "FUNCTION jobq_fair_flag_" in f]
    return [*triggers, load("0010_set_feed.py").SET_FEED, load("0015_hand_on_waits.py").HAND_ON]


def upgrade() -> None:
    op.execute("ALTER TABLE fair_queue ADD COLUMN feed_from timestamptz NOT NULL "
               "DEFAULT '-infinity'")
    for function in FUNCTIONS:
        op.execute(function)


def downgrade() -> None:
    for function in _before():
        op.execute(function)
    op.execute("ALTER TABLE fair_queue DROP COLUMN feed_from")
