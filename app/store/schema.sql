-- The database functions and triggers the engine relies on, as they are after the newest
-- migration. Nothing loads this file: the migrations (alembic/versions/) change the database,
-- and tests/integration/test_schema_sql.py holds every function and trigger there equal to this
-- file, so a function changes in a new migration and here, together. `public.` stands for the
-- schema the migrations ran in (0004 and 0006 qualify what their functions touch with it).

-- === Every new job's first event (0001, 0006) ================================================

-- The `created` event of every new row (`refused` for one written failed), whoever wrote it.
CREATE OR REPLACE FUNCTION jobq_record_created() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO job_events (job_id, attempt, kind, error, detail)
    SELECT id, 0,
           CASE WHEN status = 'failed' THEN 'refused' ELSE 'created' END,
           error_message,
           jsonb_strip_nulls(jsonb_build_object(
               'source', source, 'run_at', run_at, 'idempotency_key', idempotency_key,
               'parent_id', parent_id, 'by', requested_by,
               'awaiting_approval', CASE WHEN status = 'awaiting_approval' THEN true END,
               'approval_expires_at', approval_expires_at))
      FROM new_jobs;
    RETURN NULL;
END
$$;

-- Per statement: a bulk INSERT costs one more statement, not one per row.
CREATE TRIGGER job_executions_created AFTER INSERT ON job_executions
    REFERENCING NEW TABLE AS new_jobs FOR EACH STATEMENT
    EXECUTE FUNCTION jobq_record_created();

-- === Row-level security: a transaction bound to one tenant (0004, 0006) =======================
-- The handler role sees the rows of the tenant its transaction is bound to (jobq_bindings).
-- Only these functions write a binding; EXECUTE on them is granted to the handler role alone.

-- The tenant the current transaction is bound to, or NULL: what every tenant policy compares.
CREATE OR REPLACE FUNCTION public.jobq_current_tenant() RETURNS uuid
    LANGUAGE sql STABLE SECURITY DEFINER PARALLEL RESTRICTED
    SET search_path = pg_catalog, pg_temp
AS $$
    SELECT b.bound_tenant FROM public.jobq_bindings b
     WHERE b.pid = pg_catalog.pg_backend_pid()
       AND b.xid = pg_catalog.pg_current_xact_id_if_assigned()::text::bigint
$$;

-- Bind a handler's transaction to its job's tenant, on a ticket of the job's running attempt.
CREATE OR REPLACE FUNCTION public.jobq_bind(job uuid, ticket text) RETURNS uuid
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER PARALLEL UNSAFE
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    bound uuid;
BEGIN
    SELECT j.tenant_id INTO bound
      FROM public.job_executions j
     WHERE j.id = job AND j.status = 'processing' AND j.lease_owner IS NOT NULL
       AND pg_catalog.encode(pg_catalog.sha256(pg_catalog.convert_to(
               j.id::text || ':' || j.lease_owner || ':'
               || pg_catalog.pg_backend_pid()::text, 'UTF8')), 'hex') = ticket;
    IF bound IS NULL THEN
        RAISE EXCEPTION 'job % is not running under this binding', job
            USING ERRCODE = 'insufficient_privilege',
                  HINT = 'the engine binds a handler''s transaction to the job it runs';
    END IF;
    INSERT INTO public.jobq_bindings (pid, xid, bound_tenant, job_id)
    VALUES (pg_catalog.pg_backend_pid(), pg_catalog.pg_current_xact_id()::text::bigint,
            bound, job)
    ON CONFLICT (pid) DO UPDATE
        SET xid = EXCLUDED.xid, bound_tenant = EXCLUDED.bound_tenant,
            job_id = EXCLUDED.job_id;
    RETURN bound;
END
$$;

-- Bind an API request's transaction to a tenant, on a ticket only the API secret can make.
CREATE OR REPLACE FUNCTION public.jobq_bind_tenant(tenant uuid, ticket text) RETURNS uuid
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER PARALLEL UNSAFE
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF NOT EXISTS (
        SELECT 1 FROM public.jobq_api_secret s
         WHERE pg_catalog.encode(pg_catalog.sha256(pg_catalog.convert_to(
                   s.secret || ':' || tenant::text || ':'
                   || pg_catalog.pg_backend_pid()::text, 'UTF8')), 'hex') = ticket)
    THEN
        RAISE EXCEPTION 'tenant % is not bound by this ticket', tenant
            USING ERRCODE = 'insufficient_privilege',
                  HINT = 'the API binds a request''s transaction to its tenant';
    END IF;
    INSERT INTO public.jobq_bindings (pid, xid, bound_tenant, job_id)
    VALUES (pg_catalog.pg_backend_pid(), pg_catalog.pg_current_xact_id()::text::bigint,
            tenant, NULL)
    ON CONFLICT (pid) DO UPDATE
        SET xid = EXCLUDED.xid, bound_tenant = EXCLUDED.bound_tenant, job_id = NULL;
    RETURN tenant;
END
$$;

-- === Fair queueing over tenants (0005) =======================================================
-- SECURITY DEFINER: a handler's session submits through them without a grant on the tables.

-- New rows: flag each (queue, tenant) with an unpublished pending job ready; wake its feeder.
CREATE OR REPLACE FUNCTION jobq_fair_flag_inserted() RETURNS trigger
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
END $$;

-- Per statement: a large INSERT ... SELECT touches one fair_queue row per (queue, tenant).
CREATE TRIGGER jobq_fair_inserted AFTER INSERT ON job_executions
    REFERENCING NEW TABLE AS jobq_new_rows FOR EACH STATEMENT
    EXECUTE FUNCTION jobq_fair_flag_inserted();

-- A job put back to pending and unpublished (retry, lost run, requeue, held): flag it ready.
CREATE OR REPLACE FUNCTION jobq_fair_flag_updated() RETURNS trigger
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
END $$;

-- Per row, only for an update that leaves a job pending and unpublished in a queue.
CREATE TRIGGER jobq_fair_updated AFTER UPDATE OF published_at, queue, status ON job_executions
    FOR EACH ROW
    WHEN (NEW.status = 'pending' AND NEW.published_at IS NULL AND NEW.queue IS NOT NULL)
    EXECUTE FUNCTION jobq_fair_flag_updated();

-- How many of a caller's new jobs may skip the line: none while anyone waits or a cap applies.
CREATE OR REPLACE FUNCTION jobq_fast_room(p_queue text, p_tenant uuid, p_window int) RETURNS int
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
$$;

-- The next p_n jobs of a queue in start-time fair order over tenants, stamped published.
CREATE OR REPLACE FUNCTION jobq_feed(p_queue text, p_n int)
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
END $$;
