"""A cap never idles its own academy: the run that frees a capped tenant's slot hands its next
job on.

A tenant capped at ``max_running`` got its next job only when a feeder's look found its slot
free: after the run's completion was written (with the worker's next claim) and behind the
window of everyone else's jobs already in the broker, so with two workers an academy capped at
one job sat idle for about one job's length each time while it had a backlog.
``jobq_hand_on(queue, tenant)`` is called by the run that just ended, once its outcome is
written: when the tenant is active, capped, under its cap and no other ready tenant would start
before it (its turn has come; one ahead waits for the feeder like anyone else), it takes the
tenant's next due jobs up to the cap, stamps them published and advances the tenant's virtual
time as ``jobq_feed`` would. The caller puts them at the front of the broker's queue, so the
worker that just finished takes one next. Nothing waits for the feeder's window: a capped
tenant's jobs in flight are bounded by its cap.

Revision ID: 0011_hand_on
Revises: 0010_set_feed
Create Date: 2026-12-07 00:30:00
"""

from __future__ import annotations

from alembic import op

revision = "0011_hand_on"
down_revision = "0010_set_feed"
branch_labels = None
depends_on = None

HAND_ON = """
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
    SELECT coalesce(max(c.vclock), 0) INTO clock FROM fair_clock c WHERE c.queue = p_queue;
    -- Ready (it has jobs waiting) and not being fed right now (a feeder's look holds the row).
    SELECT fq.vtime INTO f FROM fair_queue fq
     WHERE fq.queue = p_queue AND fq.tenant_id = p_tenant AND fq.ready
       FOR UPDATE OF fq SKIP LOCKED;
    IF NOT FOUND THEN
        RETURN;
    END IF;
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
           SET vtime = greatest(fq.vtime, clock) + (SELECT count(*) FROM stamped) / d.weight
         WHERE fq.queue = p_queue AND fq.tenant_id = p_tenant
           AND EXISTS (SELECT 1 FROM stamped)
        RETURNING 1
    )
    -- (advanced runs to completion unread, as every data-modifying WITH does.)
    SELECT s.id, s.tenant_id, s.intent_key, s.intent_params FROM stamped s ORDER BY s.due, s.id;
END $$
"""


def upgrade() -> None:
    op.execute(HAND_ON)


def downgrade() -> None:
    op.execute("DROP FUNCTION jobq_hand_on(text, uuid)")
