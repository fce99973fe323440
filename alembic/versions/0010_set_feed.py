"""The fair pick as a set: the next jobs across many tenants in a few statements, not a loop.

``jobq_feed(queue, n)`` walked the ready tenants one at a time (four statements each, and a
``tenant_id <> ALL (skip)`` that grew with every skipped one), so handing out a window over a
thousand one-job tenants cost tens of milliseconds. Now it reads the ready tenants once, in fair
order, until it has ``n`` that may take a job (active, under their cap), then picks every
candidate's next jobs in one statement and keeps the ``n`` with the smallest start tags
(start-time fair queueing: a tenant's k-th job starts at ``greatest(vtime, clock) + k / weight``;
ties go to the tenant first in fair order), stamps them published and advances each tenant's
virtual time by what it got. The order it hands out is the loop's; its cost grows with ``n``,
not with the number of tenants waiting.

Revision ID: 0010_set_feed
Revises: 0009_idempotency_request
Create Date: 2026-12-07 08:00:00
"""

from __future__ import annotations

from alembic import op

revision = "0010_set_feed"
down_revision = "0009_idempotency_request"
branch_labels = None
depends_on = None

SET_FEED = """
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
        SELECT fq.tenant_id, fq.vtime
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
        SELECT u.tenant_id, u.start, u.weight, u.ord,
               -- How many of its jobs could be among the n: those starting no later than the
               -- last candidate's first, plus what the candidates leave of n, within its cap.
               least(u.room, p_n, (p_n - n + 1)
                     + floor((c_start[n] - u.start) * u.weight)::int) AS lim
          FROM unnest(c_tenant, c_start, c_weight, c_room)
               WITH ORDINALITY AS u(tenant_id, start, weight, room, ord)
    ), fetched AS (
        SELECT c.tenant_id, c.start, c.weight, c.ord, j.id, j.due,
               row_number() OVER (PARTITION BY c.tenant_id ORDER BY j.due, j.id) - 1 AS k
          FROM c CROSS JOIN LATERAL (
                SELECT je.id, coalesce(je.run_at, je.created_at) AS due
                  FROM job_executions je
                 WHERE je.queue = p_queue AND je.tenant_id = c.tenant_id
                   AND je.status = 'pending' AND je.published_at IS NULL
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
           SET vtime = g.start + g.taken / g.weight
          FROM (SELECT p.tenant_id, min(p.start) AS start, min(p.weight) AS weight,
                       count(*) AS taken
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
"""


def upgrade() -> None:
    op.execute(SET_FEED)


def downgrade() -> None:
    op.execute(_loop_feed())


def _loop_feed() -> str:
    """0005's ``jobq_feed``, as it was."""
    import importlib.util
    from pathlib import Path

    spec = importlib.util.spec_from_file_location(
        "jobq_0005", Path(__file__).with_name("0005_fairness.py"))
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    [loop] = [f for f in module.FUNCTIONS if "FUNCTION jobq_feed(" in f]
    return loop.replace("CREATE FUNCTION", "CREATE OR REPLACE FUNCTION", 1)
