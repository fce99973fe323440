"""A tenant whose every due job a pick hands out stops being ready in the pick's own update.

Where academies send a job or two at a time (the product's usual load), each job wrote its
academy's ``fair_queue`` row three times: ready on insert, the virtual time when picked, not
ready when the next look found it empty. Each write is a new row version and a new entry in
both of its indexes (``ready`` and ``vtime`` are indexed: never a HOT update), and while a
transaction holds the xmin horizon every lookup of the row walks all of them (about 1,300 a
row after 3 minutes at 50 jobs/s, ``python -m bench pressure --scenarios idle_tx``). The pick
knows when it took everything due (it fetches one job more than it may take, and took all it
fetched): it writes ``ready = false`` with the virtual time, two writes a job instead of
three. It also frees callers' fast path (which stands aside while anyone is ready) one look
sooner.

Revision ID: 0019_emptied_not_ready
Revises: 0018_ready_in_pick_order
Create Date: 2026-12-07 06:40:00
"""

from __future__ import annotations

from alembic import op

revision = "0019_emptied_not_ready"
down_revision = "0018_ready_in_pick_order"
branch_labels = None
depends_on = None

FEED = """
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
        -- (One more than it may take: whether anything of it is left to wait, see advanced.)
        SELECT c.tenant_id, c.start, c.weight, c.ord, c.lim, j.id, j.due,
               row_number() OVER (PARTITION BY c.tenant_id ORDER BY j.due, j.id) - 1 AS k
          FROM c CROSS JOIN LATERAL (
                SELECT je.id, coalesce(je.run_at, je.created_at) AS due
                  FROM job_executions je
                 WHERE je.queue = p_queue AND je.tenant_id = c.tenant_id
                   AND je.status = 'pending' AND je.published_at IS NULL
                   AND coalesce(je.run_at, je.created_at) >= c.feed_from
                   AND coalesce(je.run_at, je.created_at) <= now()
                 ORDER BY coalesce(je.run_at, je.created_at), je.id
                 LIMIT c.lim + 1
                   FOR UPDATE OF je SKIP LOCKED) j
    ), picked AS (
        SELECT f.*, f.start + f.k / f.weight AS tag
          FROM fetched f
         WHERE f.k < f.lim
         ORDER BY f.start + f.k / f.weight, f.ord, f.k
         LIMIT p_n
    ), stamped AS (
        UPDATE job_executions u SET published_at = now()
          FROM picked p WHERE u.id = p.id
        RETURNING u.id, p.tenant_id, u.intent_key, u.intent_params, p.tag, p.ord, p.k
    ), advanced AS (
        -- A tenant whose every due job went out is no longer ready, in this same update (0019):
        -- before, the next look found it empty and wrote its row once more, a third write of it
        -- a job where academies send a job at a time. (An insert racing this look holds the
        -- row, so the look passes the tenant over; one after it flags the tenant again.)
        UPDATE fair_queue fq
           SET vtime = g.start + g.taken / g.weight,
               feed_from = greatest(fq.feed_from, g.due - interval '1 second'),
               ready = NOT g.emptied
          FROM (SELECT p.tenant_id, min(p.start) AS start, min(p.weight) AS weight,
                       count(*) AS taken, max(p.due) AS due,
                       count(*) = min(x.got) AS emptied
                  FROM picked p
                  JOIN (SELECT f.tenant_id, count(*) AS got FROM fetched f
                         GROUP BY f.tenant_id) x ON x.tenant_id = p.tenant_id
                 GROUP BY p.tenant_id) g
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
"""


def upgrade() -> None:
    op.execute(FEED)


def downgrade() -> None:
    """0017's ``jobq_feed``, as it was (loaded from that migration, not copied)."""
    import importlib.util
    from pathlib import Path

    spec = importlib.util.spec_from_file_location(
        "jobq_0017", Path(__file__).with_name("0017_feed_from.py"))
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    [feed] = [f for f in module.FUNCTIONS if "FUNCTION jobq_feed(" in f]
    op.execute(feed)
