"""A capped academy's next job is handed on in the transaction that writes its run's outcome,
and the hand-on waits for a feeder's look that holds the academy's fair-queue row instead of
skipping it.

The look that held the row began before the slot was free, saw the academy at its cap and
handed nothing of it out; skipping the row left the academy's next job to the feeder's next
look, which put it at the back of the broker's queue behind the window: on two solo workers the
capped academy sat idle 0.8 s between two runs in one of several CI runs. Written in the same
transaction as the outcome, a look sees either both (the slot taken again) or neither (the slot
still busy), and a look in progress is waited for (one statement, milliseconds).

Revision ID: 0015_hand_on_waits
Revises: 0014_newly_due
Create Date: 2026-12-07 06:00:00
"""

from __future__ import annotations

from alembic import op

revision = "0015_hand_on_waits"
down_revision = "0014_newly_due"
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
    -- Ready (it has jobs waiting). A feeder's look holding the row began before the slot was
    -- free (it saw the tenant at its cap): wait for it (one statement), then count again.
    -- Skipping the row left the next job to the feeder's next look, at the back of the queue.
    BEGIN
        SELECT fq.vtime INTO f FROM fair_queue fq
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
    """0011's ``jobq_hand_on``, as it was."""
    import importlib.util
    from pathlib import Path

    spec = importlib.util.spec_from_file_location(
        "jobq_0011", Path(__file__).with_name("0011_hand_on.py"))
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    op.execute(module.HAND_ON)
