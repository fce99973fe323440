"""Fair to every academy: the table is the queue, Redis holds a bounded window of it.

* ``tenants.weight`` (share of a queue under contention, default 1) and
  ``tenants.max_running`` (jobs of the tenant running or handed to a worker at once, across
  queues; NULL is no cap); ``tenant_queue_limits`` caps one queue of one tenant.
* ``fair_queue``: one row per (queue, tenant) that has had work: its virtual time (start-time
  fair queueing: a pick adds ``1 / weight``) and whether it may have jobs waiting (``ready``).
  ``fair_clock``: per queue, the virtual time of the last pick (a tenant that becomes ready
  starts there, so it neither jumps ahead of nor waits behind anyone's history) and the
  window the feeder keeps in the broker.
* Triggers keep ``ready`` true for every (queue, tenant) with an unpublished pending job:
  per statement for inserts (a 3,000-row ``INSERT ... SELECT`` touches one row), per row for
  the updates that put a job back (retry, lost run, requeue, held, unpublished). The first
  flag of a queue notifies ``jobq_feed`` so an idle feeder wakes at once. A tenant that
  becomes ready after a round without work starts just before the queue's clock, and among
  equal virtual times the one ready last goes first: ahead of those that have waited within
  the round (as a new, sparse flow in FQ-CoDel), so one job of a newcomer waits for the
  window, not for a round over ten thousand backlogged tenants. Being ahead once costs it
  its turn in the round: its virtual time then moves past everyone's.
* ``jobq_feed(queue, n)`` picks the next ``n`` jobs of a queue, fairly, stamps them published
  and returns them; ``jobq_fast_room(queue, tenant, window)`` says how many of a caller's new
  jobs may skip the line (none while anyone waits in that queue or the tenant has a cap).
  Both are SECURITY DEFINER: a handler's session (jobq_handler) submits through them
  without any grant on the engine's tables.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-29 20:30:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

FUNCTIONS = [
    # New rows: flag each (queue, tenant) that got an unpublished pending job.
    """
    CREATE FUNCTION jobq_fair_flag_inserted() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER SET search_path FROM CURRENT AS $$
    DECLARE q text;
    BEGIN
        FOR q IN
            WITH flagged AS (
                INSERT INTO fair_queue AS f (queue, tenant_id, vtime, ready)
                SELECT n.queue, n.tenant_id,
                       coalesce((SELECT c.vclock FROM fair_clock c WHERE c.queue = n.queue), 0) - 1e-6,
                       true
                  FROM (SELECT DISTINCT queue, tenant_id FROM jobq_new_rows
                         WHERE status = 'pending' AND published_at IS NULL
                           AND queue IS NOT NULL) n
                ON CONFLICT (queue, tenant_id) DO UPDATE
                   SET ready = true, vtime = greatest(f.vtime, excluded.vtime),
                       readied_at = clock_timestamp()
                 WHERE NOT f.ready
                RETURNING f.queue
            )
            SELECT DISTINCT queue FROM flagged
        LOOP
            PERFORM pg_notify('jobq_feed', q);
        END LOOP;
        RETURN NULL;
    END $$
    """,
    # A job put back to pending and unpublished: flag its (queue, tenant).
    """
    CREATE FUNCTION jobq_fair_flag_updated() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER SET search_path FROM CURRENT AS $$
    BEGIN
        INSERT INTO fair_queue AS f (queue, tenant_id, vtime, ready)
        VALUES (NEW.queue, NEW.tenant_id,
                coalesce((SELECT c.vclock FROM fair_clock c WHERE c.queue = NEW.queue), 0) - 1e-6,
                true)
        ON CONFLICT (queue, tenant_id) DO UPDATE
           SET ready = true, vtime = greatest(f.vtime, excluded.vtime),
               readied_at = clock_timestamp()
         WHERE NOT f.ready;
        IF FOUND THEN
            PERFORM pg_notify('jobq_feed', NEW.queue);
        END IF;
        RETURN NULL;
    END $$
    """,
    # How many of a caller's new jobs for (queue, tenant) may be published at once.
    """
    CREATE FUNCTION jobq_fast_room(p_queue text, p_tenant uuid, p_window int) RETURNS int
    LANGUAGE sql STABLE SECURITY DEFINER SET search_path FROM CURRENT AS $$
        SELECT CASE
            WHEN EXISTS (SELECT 1 FROM fair_queue f WHERE f.queue = p_queue AND f.ready) THEN 0
            WHEN EXISTS (SELECT 1 FROM tenants t WHERE t.id = p_tenant
                            AND t.max_running IS NOT NULL) THEN 0
            WHEN EXISTS (SELECT 1 FROM tenant_queue_limits l WHERE l.tenant_id = p_tenant
                            AND l.queue = p_queue) THEN 0
            ELSE greatest(0,
                    coalesce((SELECT c.window_size FROM fair_clock c WHERE c.queue = p_queue),
                             p_window)
                    - (SELECT count(*) FROM job_executions j WHERE j.queue = p_queue
                          AND j.status = 'pending' AND j.published_at IS NOT NULL))::int
        END
    $$
    """,
    # The next p_n jobs of a queue in start-time fair order over tenants (weights, caps, only
    # active tenants, only due jobs), stamped published. Tenants and jobs another feeder or
    # caller holds are skipped, never waited for.
    """
    CREATE FUNCTION jobq_feed(p_queue text, p_n int)
    RETURNS TABLE (id uuid, tenant_id uuid, intent_key text, intent_params jsonb)
    LANGUAGE plpgsql SECURITY DEFINER SET search_path FROM CURRENT AS $$
    #variable_conflict use_column
    DECLARE
        f record;
        j record;
        skip uuid[] := '{}';
        got int := 0;
        busy int;
        clock float8;
        next_vtime float8;
        take int;
        taken int;
    BEGIN
        SELECT c.vclock INTO clock FROM fair_clock c WHERE c.queue = p_queue;
        IF NOT FOUND THEN
            INSERT INTO fair_clock (queue) VALUES (p_queue) ON CONFLICT DO NOTHING;
            clock := 0;
        END IF;
        WHILE got < p_n LOOP
            SELECT fq.tenant_id, fq.vtime, t.status, t.weight,
                   coalesce(l.max_running, t.max_running) AS cap,
                   l.max_running IS NOT NULL AS per_queue
              INTO f
              FROM fair_queue fq
              JOIN tenants t ON t.id = fq.tenant_id
              LEFT JOIN tenant_queue_limits l ON l.tenant_id = fq.tenant_id AND l.queue = p_queue
             WHERE fq.queue = p_queue AND fq.ready AND fq.tenant_id <> ALL (skip)
             ORDER BY fq.vtime, fq.readied_at DESC
             LIMIT 1
               FOR UPDATE OF fq SKIP LOCKED;
            EXIT WHEN NOT FOUND;
            IF f.status <> 'active' THEN  -- held (suspended) or refused by the sweep (deleted)
                UPDATE fair_queue SET ready = false
                 WHERE queue = p_queue AND fair_queue.tenant_id = f.tenant_id;
                CONTINUE;
            END IF;
            IF f.cap IS NOT NULL THEN
                SELECT count(*) INTO busy FROM job_executions je
                 WHERE je.tenant_id = f.tenant_id AND (NOT f.per_queue OR je.queue = p_queue)
                   AND (je.status = 'processing'
                        OR (je.status = 'pending' AND je.published_at IS NOT NULL));
                IF busy >= f.cap THEN
                    skip := skip || f.tenant_id;
                    CONTINUE;
                END IF;
            END IF;
            -- Its jobs in a row while its virtual time stays at or below the next tenant's
            -- (all that are wanted when it is alone: one statement, not one per job), within
            -- its cap.
            SELECT fq2.vtime INTO next_vtime FROM fair_queue fq2
             WHERE fq2.queue = p_queue AND fq2.ready AND fq2.tenant_id <> f.tenant_id
               AND fq2.tenant_id <> ALL (skip)
             ORDER BY fq2.vtime LIMIT 1;
            take := p_n - got;
            IF FOUND THEN
                take := least(take, greatest(1, floor(
                    (next_vtime - greatest(f.vtime, clock)) * f.weight)::int + 1));
            END IF;
            IF f.cap IS NOT NULL THEN
                take := least(take, f.cap - busy);
            END IF;
            taken := 0;
            FOR j IN
                WITH picked AS (
                    SELECT je.id FROM job_executions je
                     WHERE je.queue = p_queue AND je.tenant_id = f.tenant_id
                       AND je.status = 'pending' AND je.published_at IS NULL
                       AND coalesce(je.run_at, je.created_at) <= now()
                     ORDER BY coalesce(je.run_at, je.created_at), je.id
                     LIMIT take
                       FOR UPDATE OF je SKIP LOCKED
                ), stamped AS (
                    UPDATE job_executions u SET published_at = now()
                      FROM picked WHERE u.id = picked.id
                    RETURNING u.id, u.intent_key, u.intent_params,
                              coalesce(u.run_at, u.created_at) AS due
                )
                SELECT * FROM stamped ORDER BY due, id
            LOOP
                taken := taken + 1;
                id := j.id; tenant_id := f.tenant_id;
                intent_key := j.intent_key; intent_params := j.intent_params;
                RETURN NEXT;
            END LOOP;
            IF taken = 0 THEN
                -- Nothing due: the sweep flags it again when a later run_at comes due.
                UPDATE fair_queue SET ready = false
                 WHERE queue = p_queue AND fair_queue.tenant_id = f.tenant_id;
                CONTINUE;
            END IF;
            clock := greatest(clock, f.vtime);
            UPDATE fair_queue SET vtime = greatest(fair_queue.vtime, clock) + taken / f.weight
             WHERE queue = p_queue AND fair_queue.tenant_id = f.tenant_id;
            got := got + taken;
        END LOOP;
        UPDATE fair_clock SET vclock = clock WHERE queue = p_queue AND vclock < clock;
    END $$
    """,
]

SIGNATURES = [
    "jobq_fast_room(text, uuid, int)",
    "jobq_feed(text, int)",
    "jobq_fair_flag_inserted()",
    "jobq_fair_flag_updated()",
]


def upgrade() -> None:
    op.add_column("tenants", sa.Column("weight", sa.Float(), server_default=sa.text("1"),
                                       nullable=False))
    op.add_column("tenants", sa.Column("max_running", sa.Integer(), nullable=True))
    op.create_check_constraint(op.f("ck_tenants_weight"), "tenants", "weight > 0")
    op.create_check_constraint(op.f("ck_tenants_max_running"), "tenants", "max_running > 0")
    op.create_table(
        "tenant_queue_limits",
        sa.Column("tenant_id", sa.UUID(), nullable=False),
        sa.Column("queue", sa.Text(), nullable=False),
        sa.Column("max_running", sa.Integer(), nullable=False),
        sa.CheckConstraint("max_running > 0", name=op.f("ck_tenant_queue_limits_max_running")),
        sa.ForeignKeyConstraint(["tenant_id"], ["tenants.id"],
                                name=op.f("fk_tenant_queue_limits_tenant_id_tenants"),
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("tenant_id", "queue", name=op.f("pk_tenant_queue_limits")),
    )
    op.create_table(
        "fair_queue",
        sa.Column("queue", sa.Text(), nullable=False),
        sa.Column("tenant_id", sa.UUID(), nullable=False),
        sa.Column("vtime", sa.Float(), server_default=sa.text("0"), nullable=False),
        sa.Column("ready", sa.Boolean(), server_default=sa.text("true"), nullable=False),
        sa.Column("readied_at", sa.DateTime(timezone=True),
                  server_default=sa.text("clock_timestamp()"), nullable=False),
        sa.ForeignKeyConstraint(["tenant_id"], ["tenants.id"],
                                name=op.f("fk_fair_queue_tenant_id_tenants"), ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("queue", "tenant_id", name=op.f("pk_fair_queue")),
    )
    op.create_index("ix_fair_queue_ready", "fair_queue",
                    ["queue", "vtime", sa.text("readied_at DESC")],
                    postgresql_where=sa.text("ready"))
    op.create_table(
        "fair_clock",
        sa.Column("queue", sa.Text(), nullable=False),
        sa.Column("vclock", sa.Float(), server_default=sa.text("0"), nullable=False),
        sa.Column("window_size", sa.Integer(), nullable=True),
        sa.PrimaryKeyConstraint("queue", name=op.f("pk_fair_clock")),
    )
    for table in ("tenant_queue_limits", "fair_queue", "fair_clock"):
        op.execute(f"REVOKE ALL ON {table} FROM PUBLIC")
    # Tables with a tenant_id are bound like every other (0004): the engine's own policy
    # only, since handlers have no grant on them (their functions below are SECURITY DEFINER).
    for table in ("tenant_queue_limits", "fair_queue"):
        op.execute(f"ALTER TABLE {table} ENABLE ROW LEVEL SECURITY")
        op.execute(f"ALTER TABLE {table} FORCE ROW LEVEL SECURITY")
        op.execute(f"CREATE POLICY jobq_engine ON {table} TO current_user "
                   "USING (true) WITH CHECK (true)")
    # The feeder's pick: a tenant's oldest due unpublished job of a queue.
    op.create_index("ix_job_executions_ready", "job_executions",
                    ["queue", "tenant_id", sa.text("coalesce(run_at, created_at)")],
                    postgresql_where=sa.text("status = 'pending' AND published_at IS NULL"))
    # The window: jobs handed to the broker and not yet started, per queue.
    op.create_index("ix_job_executions_in_flight", "job_executions", ["queue"],
                    postgresql_where=sa.text("status = 'pending' AND published_at IS NOT NULL"))
    # The sweep: rows inserted without a queue (plain SQL), by when they are due.
    op.create_index("ix_job_executions_unrouted", "job_executions",
                    [sa.text("coalesce(run_at, created_at)")],
                    postgresql_where=sa.text("status = 'pending' AND queue IS NULL"))
    # Caps: a tenant's jobs running or handed to a worker.
    op.create_index("ix_job_executions_tenant_busy", "job_executions", ["tenant_id", "queue"],
                    postgresql_where=sa.text("status = 'processing' OR "
                                             "(status = 'pending' AND published_at IS NOT NULL)"))
    for function in FUNCTIONS:
        op.execute(function)
    op.execute("GRANT EXECUTE ON FUNCTION jobq_fast_room(text, uuid, int) TO PUBLIC")
    op.execute("REVOKE ALL ON FUNCTION jobq_feed(text, int) FROM PUBLIC")
    op.execute(
        "CREATE TRIGGER jobq_fair_inserted AFTER INSERT ON job_executions "
        "REFERENCING NEW TABLE AS jobq_new_rows FOR EACH STATEMENT "
        "EXECUTE FUNCTION jobq_fair_flag_inserted()"
    )
    op.execute(
        "CREATE TRIGGER jobq_fair_updated AFTER UPDATE OF published_at, queue, status "
        "ON job_executions FOR EACH ROW "
        "WHEN (NEW.status = 'pending' AND NEW.published_at IS NULL AND NEW.queue IS NOT NULL) "
        "EXECUTE FUNCTION jobq_fair_flag_updated()"
    )
    # What is pending and unpublished now waits in the fair queue.
    op.execute(
        "INSERT INTO fair_queue (queue, tenant_id) SELECT DISTINCT queue, tenant_id "
        "FROM job_executions WHERE status = 'pending' AND published_at IS NULL "
        "AND queue IS NOT NULL ON CONFLICT DO NOTHING"
    )


def downgrade() -> None:
    op.execute("DROP TRIGGER jobq_fair_updated ON job_executions")
    op.execute("DROP TRIGGER jobq_fair_inserted ON job_executions")
    for signature in SIGNATURES:
        op.execute(f"DROP FUNCTION {signature}")
    op.drop_index("ix_job_executions_tenant_busy", table_name="job_executions")
    op.drop_index("ix_job_executions_in_flight", table_name="job_executions")
    op.drop_index("ix_job_executions_unrouted", table_name="job_executions")
    op.drop_index("ix_job_executions_ready", table_name="job_executions")
    op.drop_table("fair_clock")
    op.drop_index("ix_fair_queue_ready", table_name="fair_queue")
    op.drop_table("fair_queue")
    op.drop_table("tenant_queue_limits")
    op.drop_constraint(op.f("ck_tenants_max_running"), "tenants", type_="check")
    op.drop_constraint(op.f("ck_tenants_weight"), "tenants", type_="check")
    op.drop_column("tenants", "max_running")
    op.drop_column("tenants", "weight")
