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

-- Per statement: a large INSERT ... SELECT touches one fair_queue row per (queue, tenant).
CREATE TRIGGER jobq_fair_inserted AFTER INSERT ON job_executions
    REFERENCING NEW TABLE AS jobq_new_rows FOR EACH STATEMENT
    EXECUTE FUNCTION jobq_fair_flag_inserted();

-- A job put back to pending and unpublished (retry, lost run, requeue, held): flag it ready,
-- and lower its tenant's feed_from to the job's due time when it is earlier (0017).
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

-- The next p_n jobs of a queue in start-time fair order over tenants, stamped published: the
-- candidates read once in fair order, their jobs picked as one set (0010). Each tenant's pick
-- starts at its feed_from, a second before the last job it was handed: the entries of the jobs
-- handed out before it are not walked again (dead, and kept while a transaction holds the xmin
-- horizon: thousands a tenant after minutes of it). What comes due before it lowers it (the
-- triggers, the sweep), and the sweep's full look sets it back once a minute (0017).
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
END $$;

-- The run that frees a capped tenant's slot hands the tenant's next jobs on (up to its cap, when
-- its turn has come), stamped published, for the front of the broker's queue (0011); in the
-- transaction that writes the run's outcome, waiting for a feeder's look that holds the
-- tenant's row (0015).
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
END $$;

-- === The statistics' hourly rollup (0020) ====================================================
-- A finished job written with its finish more than five minutes back (a completion recorded
-- late, a job requeued, history imported) counts a change of its hour, if rolled already, so
-- the statistics read that hour from the jobs until it is rolled again (app/store/rollup.py).
CREATE OR REPLACE FUNCTION jobq_stats_changed() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path FROM CURRENT AS $$
DECLARE
    hours timestamptz[] := '{}';
BEGIN
    IF TG_OP = 'UPDATE' AND OLD.status IN ('completed', 'failed', 'cancelled') THEN
        hours := hours || date_trunc('hour', OLD.completed_at, 'UTC');
    END IF;
    IF NEW.status IN ('completed', 'failed', 'cancelled') THEN
        hours := hours || date_trunc('hour', NEW.completed_at, 'UTC');
    END IF;
    UPDATE job_stats_hours SET changes = changes + 1 WHERE hour = ANY(hours);
    RETURN NULL;
END $$;

-- Per row, but the condition is the statement's: a completion recorded as it happens calls
-- nothing.
CREATE TRIGGER jobq_stats_updated AFTER UPDATE ON job_executions FOR EACH ROW
WHEN (((OLD.status IN ('completed', 'failed', 'cancelled') AND OLD.completed_at < now() - interval '5 minutes')
       OR (NEW.status IN ('completed', 'failed', 'cancelled') AND NEW.completed_at < now() - interval '5 minutes'))
      AND ROW(OLD.status, OLD.completed_at, OLD.executed_at, OLD.retry_count, OLD.tenant_id, OLD.intent_key, OLD.queue, OLD.run_at, OLD.created_at) IS DISTINCT FROM ROW(NEW.status, NEW.completed_at, NEW.executed_at, NEW.retry_count, NEW.tenant_id, NEW.intent_key, NEW.queue, NEW.run_at, NEW.created_at))
EXECUTE FUNCTION jobq_stats_changed();

CREATE TRIGGER jobq_stats_inserted AFTER INSERT ON job_executions FOR EACH ROW
WHEN (NEW.status IN ('completed', 'failed', 'cancelled') AND NEW.completed_at < now() - interval '5 minutes')
EXECUTE FUNCTION jobq_stats_changed();
