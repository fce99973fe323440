"""Cost as the table grows: with N finished jobs (and their events) already in the table plus
a backlog of pending jobs over many tenants, what the hot path, the caretaking and the
command line cost, for each N.

For each size (the table grows from one to the next, never refilled): finished jobs are
added set-based (completed, 1 in 20 failed, created evenly over the past ``--days`` days,
over ``--tenants`` tenants and the manifest's intents, each with the ``created``, ``started``
and ``completed``/``failed`` events the engine writes), then VACUUM ANALYZE, then
``--pending`` pending echo jobs over the tenants (by plain INSERT into their queue, so the
fair queue has them). Then, timing the app's own functions:

- ``jobq job ID`` (lookup by an 8-character prefix + its history), ``jobq jobs`` first page
  (all tenants; one tenant), ``jobq stats --since 24h`` (both of its statements);
- one sweep pass (``app.beat.sweep.sweep``), ``recover_lost_runs`` (``recovery.recover_once``),
  the feeder's look at its queue (``jobstore.look``: the window's count, ``jobq_feed`` of a
  64-job window and whether anyone waits, in one statement, rolled back so each look sees the
  same backlog);
- claim and completion per job (``jobstore.claim`` / ``jobstore.complete`` on a status
  connection, as the runner does), median and p95;
- one retention pass (``retention.delete_expired``, default ages: the oldest day of completed
  jobs is past 90 days) while a thread claims and completes jobs: its claim latency before and
  during, and whether any session waited on a lock;
- drain: ``--drain`` of the pending jobs run by a real worker (prefork, 2 processes).

    python -m bench scale [--sizes 10000,1000000,10000000] [--pending 100000] [--tenants 1000]
    python -m bench scale --sizes 10000,100000 --pending 10000 --tenants 100   # quick

Results: bench/results/scale.json (``--out`` names another file). ``--keep`` keeps the
database (10M rows take about half an hour to write); ``BENCH_REUSE_DB=<it> python -m bench
scale --sizes 10000000`` migrates it to head and measures it again (after a schema change).
"""

from __future__ import annotations

import argparse
import os
import platform
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from bench import env  # first: sets up the environment
from bench.common import (
    celery_worker,
    median,
    percentile,
    print_table,
    redis_client,
    stop_all,
    write_result,
)

ECHO = "system.exec.echo"
ALL_QUEUES = "celery,dispatch,realtime,bulk,maintenance"
#: Rows added per statement while filling (each with its three events).
CHUNK = 1_000_000
#: 1 in this many finished jobs failed.
FAILED_EVERY = 20


def sql(statement: str, **params: Any) -> list[Any]:
    from sqlalchemy import text

    from app.store import db

    with db.engine().begin() as conn:
        result = conn.execute(text(statement), params)
        return result.all() if result.returns_rows else []


def raw(statement: str) -> None:
    """A statement outside a transaction (VACUUM), on its own connection."""
    import psycopg2

    conn = psycopg2.connect(env.DATABASE_URL)
    conn.autocommit = True
    try:
        conn.cursor().execute(statement)
    finally:
        conn.close()


def timed(fn: Callable[[], Any], reps: int) -> list[float]:
    """Milliseconds of each of ``reps`` calls."""
    out = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t0) * 1000)
    return out


# --- the data --------------------------------------------------------------------------------

def setup(tenants: int) -> None:
    """Tenants, and the bench's own lookup tables (number -> tenant, number -> intent)."""
    from app.core.registry import manifest

    if sql("SELECT 1 FROM pg_class WHERE relname = 'bench_tenants'"):
        return  # a database kept from an earlier run (BENCH_REUSE_DB)
    sql("CREATE TABLE bench_tenants (n int PRIMARY KEY, id uuid NOT NULL)")
    sql("INSERT INTO tenants (name) SELECT '벤치 학원 ' || i FROM generate_series(0, :n - 1) i",
        n=tenants)
    sql("INSERT INTO bench_tenants (n, id) SELECT row_number() OVER (ORDER BY name) - 1, id "
        "FROM tenants")
    sql("CREATE TABLE bench_intents (n int PRIMARY KEY, key text NOT NULL, queue text NOT NULL)")
    intents = sorted((i.key, i.queue) for i in manifest if not i.requires_approval)
    for n, (key, queue) in enumerate(intents):
        sql("INSERT INTO bench_intents VALUES (:n, :k, :q)", n=n, k=key, q=queue)


#: ``:lo`` .. ``:hi`` - 1 finished jobs with their three events. Created evenly over the past
#: ``:days`` days (golden-ratio spacing: each chunk spreads over the whole window too), ran
#: 20 ms to 2 s after a wait of up to 0.5 s. Each chunk is written in time order, as a live
#: table is (a day's rows lie together, in one stretch of the heap per chunk). Triggers and foreign-key checks are off for the
#: fill (session_replication_role = replica): the events are written here, as the engine
#: writes them, and every job_id is the job just inserted.
FILL = """
WITH j AS (
    INSERT INTO job_executions (
        id, tenant_id, intent_key, intent_params, status, retry_count, max_retries,
        created_at, executed_at, completed_at, error_message, queue, source, worker,
        published_at, updated_at, result)
    SELECT gen_random_uuid(), bt.id, bi.key, jsonb_build_object('n', g, 'note', 'bench row'),
           CASE WHEN g % :failed_every = 0 THEN 'failed' ELSE 'completed' END, 0, 3,
           c.at, c.at + w.wait, c.at + w.wait + w.run,
           CASE WHEN g % :failed_every = 0
                THEN 'ValueError: the bench says this one fails' END,
           bi.queue, 'api', 'bench-worker@' || (g % 4), c.at, c.at + w.wait + w.run,
           CASE WHEN g % :failed_every = 0 THEN NULL
                ELSE jsonb_build_object('ok', true, 'n', g) END
      FROM generate_series(:lo, :hi - 1) g
      JOIN bench_tenants bt ON bt.n = g % :tenants
      JOIN bench_intents bi ON bi.n = (g / 7) % :intents,
           LATERAL (SELECT now() - interval '1 minute'
                           - make_interval(secs => ((g * 0.6180339887498949) % 1)
                                                  * :days * 86400) AS at) c,
           LATERAL (SELECT make_interval(secs => (g % 500) / 1000.0) AS wait,
                           make_interval(secs => 0.02 + (g % 1990) / 1000.0) AS run) w
     ORDER BY c.at
    RETURNING id, status, created_at, executed_at, completed_at, worker, error_message, source
)
INSERT INTO job_events (job_id, attempt, kind, at, worker, error, detail)
SELECT * FROM (
    SELECT id, 0, 'created', created_at, NULL, NULL, jsonb_build_object('source', source) FROM j
    UNION ALL
    SELECT id, 1, 'started', executed_at, worker, NULL, NULL FROM j
    UNION ALL
    SELECT id, 1, status, completed_at, worker, error_message,
           CASE WHEN status = 'completed' THEN jsonb_build_object('ms', 1) END FROM j
) e (job_id, attempt, kind, at, worker, error, detail)
 ORDER BY at
"""


def fill(lo: int, hi: int, *, tenants: int, days: float) -> None:
    """Finished jobs number ``lo`` .. ``hi`` - 1, in chunks, with a progress line."""
    [(intents,)] = sql("SELECT count(*) FROM bench_intents")
    start = time.monotonic()
    for a in range(lo, hi, CHUNK):
        b = min(hi, a + CHUNK)
        t0 = time.monotonic()
        from sqlalchemy import text

        from app.store import db

        with db.engine().begin() as conn:
            conn.execute(text("SET LOCAL session_replication_role = replica"))
            conn.execute(text("SET LOCAL work_mem = '256MB'"))
            conn.execute(text(FILL), {"lo": a, "hi": b, "tenants": tenants, "intents": intents,
                                      "days": days, "failed_every": FAILED_EVERY})
        print(f"  filled {b:,} finished jobs ({b - a:,} in {time.monotonic() - t0:.1f} s, "
              f"{time.monotonic() - start:.0f} s so far)", flush=True)


def add_pending(n: int, tenants: int, queue: str) -> None:
    """``n`` pending echo jobs over the tenants, arrived over the last ``n`` × 6 ms, in their
    queue: the insert's triggers write their created events and flag the fair queue."""
    sql("INSERT INTO job_executions (tenant_id, intent_key, intent_params, queue, source, "
        "created_at, updated_at) "
        "SELECT bt.id, :k, jsonb_build_object('i', g), :q, 'api', "
        "now() - (:n - g) * interval '6 ms', now() "
        "FROM generate_series(0, :n - 1) g JOIN bench_tenants bt ON bt.n = g % :tenants",
        k=ECHO, q=queue, n=n, tenants=tenants)


def clear_pending() -> int:
    """Delete what is left of the backlog (and its messages) before the table grows on."""
    [(n,)] = sql("WITH d AS (DELETE FROM job_executions WHERE status IN "
                 "('pending', 'processing') RETURNING 1) SELECT count(*) FROM d")
    sql("UPDATE fair_queue SET ready = false WHERE ready")
    client = redis_client()
    keys = [*ALL_QUEUES.split(","), "unacked", "unacked_index"]
    client.delete(*(env.KEY_PREFIX + k for k in keys))
    return n


def table_sizes() -> dict[str, Any]:
    rows = sql("SELECT relname, pg_total_relation_size(oid) FROM pg_class "
               "WHERE relname IN ('job_executions', 'job_events', 'job_stats_hourly') "
               "AND relkind = 'r'")
    return {name: round(size / 2**20) for name, size in rows}


# --- the measurements ------------------------------------------------------------------------

def sample_ids(n: int, size: int) -> list[str]:
    pct = max(0.05, min(100.0, 100.0 * 20 * n / max(size, 1)))
    rows = sql(f"SELECT id::text FROM job_executions TABLESAMPLE SYSTEM ({pct:.4f}) "
               "WHERE status IN ('completed', 'failed') LIMIT :n", n=n * 5)
    ids = [r[0] for r in rows]
    return (ids[::5] or ids)[:n] if len(ids) >= 5 * n else ids[:n]


def reads_bench(reps: int, size: int, tenant_ids: list[str]) -> dict[str, list[float]]:
    from app.ops.cli.lookup import find_job
    from app.ops.cli.stats import TENANTS_SHOWN
    from app.store import db, reads, window_stats

    out: dict[str, list[float]] = {}
    ids = sample_ids(reps, size)
    with db.engine().connect() as conn:
        def one_job():
            job = find_job(conn, next(it))
            reads.job_events(conn, job["id"])

        it = iter(ids)
        out["job_show_ms"] = timed(one_job, len(ids))
        out["jobs_first_page_ms"] = timed(
            lambda: reads.list_jobs(conn, reads.JobFilter(), limit=21, offset=0), reps)
        tit = iter(tenant_ids * reps)
        out["jobs_first_page_tenant_ms"] = timed(
            lambda: reads.list_jobs(conn, reads.JobFilter(tenant_id=next(tit)), limit=21,
                                    offset=0), reps)
        day = reads.JobFilter(since_seconds=86400.0)

        out["stats_24h_ms"] = timed(
            lambda: window_stats.window_stats(conn, day, tenants=TENANTS_SHOWN), max(3, reps // 2))
        conn.rollback()
    return out


def roll_up_history() -> dict[str, Any]:
    """Beat's statistics caretaker over the whole history (what its first runs after an upgrade
    do, 20 s a minute), timed."""
    from app.beat import rollup

    t0, hours, jobs = time.monotonic(), 0, 0
    while True:
        report = rollup.roll_up(budget=3600.0)
        hours, jobs = hours + report.hours, jobs + report.jobs
        if report.done:
            break
    took = round(time.monotonic() - t0, 1)
    raw("ANALYZE job_stats_hourly")  # (autovacuum would; the shared server runs without it)
    return {"rollup_s": took, "rollup_hours": hours, "rollup_jobs": jobs}


def caretaking_bench(reps: int, queue: str) -> dict[str, list[float]]:
    from app.beat import recovery, sweep
    from app.core.settings import settings
    from app.store import db, jobstore

    out = {"sweep_ms": timed(sweep.sweep, reps),
           "recover_ms": timed(recovery.recover_once, reps)}
    window = max(settings.fair_window, 1)

    def look():
        with db.engine().connect() as conn:
            seen = jobstore.look(conn, queue, window)
            conn.rollback()
        assert len(seen.picked) == window, (
            f"the feeder picked {len(seen.picked)} of {window} ({seen.in_flight} in flight)")

    look()  # warm
    out["feeder_pick_ms"] = timed(look, reps)
    out["feeder_window"] = window
    return out


class Claimer:
    """Claims and completes pending jobs one at a time on a status connection, as a worker
    process does; the claim and completion latency of each."""

    def __init__(self, ids: list[str], tag: str) -> None:
        self.ids = ids
        self.tag = tag
        self.claim_ms: list[float] = []
        self.complete_ms: list[float] = []
        self.missed = 0

    def run(self, n: int | None = None, stop: threading.Event | None = None) -> None:
        from app.core.settings import settings
        from app.store import db, jobstore

        worker = f"bench-scale@{platform.node()}"
        with db.status_conn() as conn:
            done = 0
            while self.ids and (n is None or done < n) and not (stop and stop.is_set()):
                job = self.ids.pop()
                owner = f"{platform.node()}:{os.getpid()}:{self.tag}{done}"
                t0 = time.perf_counter()
                claimed, _, _ = jobstore.claim(conn, job, worker=worker, owner=owner,
                                               lease=settings.lease_seconds,
                                               default_max_retries=settings.default_max_retries)
                t1 = time.perf_counter()
                if claimed is None:
                    self.missed += 1
                    continue
                jobstore.complete(conn, [jobstore.Outcome(job, owner, worker, claimed.attempt,
                                                          {"ok": True}, None,
                                                          datetime.now(UTC))])
                t2 = time.perf_counter()
                self.claim_ms.append((t1 - t0) * 1000)
                self.complete_ms.append((t2 - t1) * 1000)
                done += 1


def pending_ids(n: int) -> list[str]:
    return [r[0] for r in sql("SELECT id::text FROM job_executions WHERE status = 'pending' "
                              "AND published_at IS NULL ORDER BY created_at DESC LIMIT :n", n=n)]


def lock_watch(stop: threading.Event, seen: list[dict]) -> None:
    """Sample the bench database's sessions for lock waits until ``stop``."""
    import psycopg2

    conn = psycopg2.connect(env.ADMIN_URL)
    conn.autocommit = True
    cur = conn.cursor()
    try:
        while not stop.is_set():
            cur.execute("SELECT pid, wait_event, left(query, 80), "
                        "extract(epoch FROM clock_timestamp() - query_start) FROM "
                        "pg_stat_activity WHERE datname = %s AND wait_event_type = 'Lock'",
                        (env.DB_NAME,))
            for pid, event, query, secs in cur.fetchall():
                seen.append({"pid": pid, "wait_event": event, "query": query,
                             "seconds": float(secs or 0)})
            stop.wait(0.02)
    finally:
        conn.close()


def retention_bench(probe_s: float, budget: float) -> dict[str, Any]:
    from app.beat import retention

    ids = pending_ids(20_000)
    before = Claimer(ids, "before")
    stop = threading.Event()
    t = threading.Thread(target=before.run, kwargs={"stop": stop})
    t.start()
    time.sleep(probe_s)
    stop.set()
    t.join()

    during = Claimer(ids, "during")
    stop, watch_stop = threading.Event(), threading.Event()
    waits: list[dict] = []
    watcher = threading.Thread(target=lock_watch, args=(watch_stop, waits))
    claimer = threading.Thread(target=during.run, kwargs={"stop": stop})
    watcher.start()
    claimer.start()
    time.sleep(0.5)
    t0 = time.perf_counter()
    report = retention.delete_expired(budget=budget)
    seconds = time.perf_counter() - t0
    stop.set()
    watch_stop.set()
    claimer.join()
    watcher.join()
    return {
        "retention_s": round(seconds, 3), "deleted_jobs": report.jobs, "done": report.done,
        "claims_before": len(before.claim_ms), "claims_during": len(during.claim_ms),
        "claim_before_p50_ms": round(median(before.claim_ms), 3),
        "claim_before_p99_ms": round(percentile(before.claim_ms, 99), 3),
        "claim_during_p50_ms": round(median(during.claim_ms), 3),
        "claim_during_p99_ms": round(percentile(during.claim_ms, 99), 3),
        "claim_during_max_ms": round(max(during.claim_ms, default=float("nan")), 3),
        "complete_during_p50_ms": round(median(during.complete_ms), 3),
        "complete_during_p99_ms": round(percentile(during.complete_ms, 99), 3),
        "lock_waits": len(waits), "lock_wait_samples": waits[:20],
    }


def drain_bench(n: int, timeout: float) -> dict[str, Any]:
    """Start a prefork-2 worker on the backlog; jobs/s from its first start to the n-th
    completion."""
    [(t_start,)] = sql("SELECT now()")
    proc = celery_worker("app", "scale", "-P", "prefork", "-c", "2", "-Q", ALL_QUEUES)
    try:
        deadline = time.monotonic() + timeout
        while True:
            [(done,)] = sql("SELECT count(*) FROM job_executions WHERE status = 'completed' "
                            "AND completed_at > :t AND intent_key = :k", t=t_start, k=ECHO)
            if done >= n:
                break
            if time.monotonic() > deadline or proc.popen.poll() is not None:
                raise SystemExit(f"drain: {done} of {n} in {timeout:.0f} s; see {proc.log}")
            time.sleep(0.2)
    finally:
        stop_all([proc])
    [(first, last)] = sql(
        "SELECT min(executed_at), (SELECT completed_at FROM job_executions "
        "  WHERE status = 'completed' AND completed_at > :t AND intent_key = :k "
        "  ORDER BY completed_at LIMIT 1 OFFSET :n - 1) "
        "FROM job_executions WHERE executed_at > :t AND intent_key = :k",
        t=t_start, k=ECHO, n=n)
    seconds = (last - first).total_seconds()
    return {"drain_jobs": n, "drain_s": round(seconds, 3), "drain_jobs_per_s": round(n / seconds, 1)}


# --- the run ---------------------------------------------------------------------------------

#: (label, key in a size's result, how to show it); growth is the largest size over the
#: smallest. ``hot``: on the hot path (target ≤ 1.5×).
ROWS = [
    ("drain, jobs/s (prefork 2)", "drain_jobs_per_s", False),
    ("claim p50 ms", "claim_p50_ms", True),
    ("claim p95 ms", "claim_p95_ms", True),
    ("completion p50 ms", "complete_p50_ms", True),
    ("completion p95 ms", "complete_p95_ms", True),
    ("sweep pass ms", "sweep_ms", True),
    ("recover_lost_runs ms", "recover_ms", False),
    ("feeder look (64-job window) ms", "feeder_pick_ms", True),
    ("jobq jobs, first page, all ms", "jobs_first_page_ms", True),
    ("jobq jobs, first page, one tenant ms", "jobs_first_page_tenant_ms", True),
    ("jobq job ID ms", "job_show_ms", True),
    ("jobq stats --since 24h ms", "stats_24h_ms", False),
    ("statistics rollup of the history, s", "rollup_s", False),
    ("retention: day deleted, s", "retention_s", False),
    ("retention: jobs deleted", "deleted_jobs", False),
    ("claim p50 ms before retention", "claim_before_p50_ms", False),
    ("claim p99 ms before retention", "claim_before_p99_ms", False),
    ("claim p50 ms during retention", "claim_during_p50_ms", False),
    ("claim p99 ms during retention", "claim_during_p99_ms", False),
    ("lock waits seen during retention", "lock_waits", False),
]


def measure(size: int, args, queue: str, tenant_ids: list[str]) -> dict[str, Any]:
    result: dict[str, Any] = {"finished_jobs": size}
    t0 = time.monotonic()
    add_pending(args.pending, args.tenants, queue)
    raw("ANALYZE job_executions")
    result["pending_insert_s"] = round(time.monotonic() - t0, 1)
    print(f"  {args.pending:,} pending over {args.tenants:,} tenants "
          f"({result['pending_insert_s']} s)", flush=True)
    result.update(roll_up_history())
    print(f"  statistics rollup: {result['rollup_hours']:,} hours of "
          f"{result['rollup_jobs']:,} finished jobs in {result['rollup_s']} s", flush=True)
    samples: dict[str, Any] = {}
    samples.update(reads_bench(args.reps, size, tenant_ids))
    print("  reads measured", flush=True)
    samples.update(caretaking_bench(args.reps, queue))
    print("  sweep, recovery, feeder measured", flush=True)
    claimer = Claimer(pending_ids(args.claims + 100), "c")
    claimer.run(args.claims)
    samples["claim_ms"], samples["complete_ms"] = claimer.claim_ms, claimer.complete_ms
    for key, values in samples.items():
        if isinstance(values, list):
            result[key] = round(median(values), 3)
    result["feeder_window"] = samples["feeder_window"]
    for key in ("claim", "complete"):
        result[f"{key}_p50_ms"] = round(median(samples[f"{key}_ms"]), 3)
        result[f"{key}_p95_ms"] = round(percentile(samples[f"{key}_ms"], 95), 3)
    print(f"  claim p50 {result['claim_p50_ms']} ms, completion p50 "
          f"{result['complete_p50_ms']} ms", flush=True)
    result.update(retention_bench(args.retention_probe, args.retention_budget))
    print(f"  retention: {result['deleted_jobs']:,} jobs in {result['retention_s']} s; claims "
          f"p99 {result['claim_before_p99_ms']} -> {result['claim_during_p99_ms']} ms, "
          f"{result['lock_waits']} lock waits", flush=True)
    [(left,)] = sql("SELECT count(*) FROM job_executions WHERE status = 'pending'")
    if args.drain and left < args.drain:
        print(f"  drain: only {left:,} pending left (claims took the rest): skipped", flush=True)
    elif args.drain:
        result.update(drain_bench(args.drain, args.timeout))
        print(f"  drain: {result['drain_jobs_per_s']} jobs/s", flush=True)
    result["samples_ms"] = {k: [round(v, 3) for v in vals] for k, vals in samples.items()
                            if isinstance(vals, list)}
    result["table_mb"] = table_sizes()
    result["cleared_pending"] = clear_pending()
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench scale", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="10000,1000000,10000000",
                        help="finished jobs in the table, growing (comma-separated)")
    parser.add_argument("--pending", type=int, default=100_000)
    parser.add_argument("--tenants", type=int, default=1_000)
    parser.add_argument("--days", type=float, default=91.0,
                        help="finished jobs were created over this many past days (the "
                             "oldest day is past the default 90-day retention)")
    parser.add_argument("--reps", type=int, default=20, help="timed calls per measurement")
    parser.add_argument("--claims", type=int, default=300, help="claims + completions timed")
    parser.add_argument("--drain", type=int, default=2_000, help="jobs drained by a worker "
                                                                 "(0: skip)")
    parser.add_argument("--retention-probe", type=float, default=5.0,
                        help="seconds of claims timed before the retention pass")
    parser.add_argument("--retention-budget", type=float, default=600.0,
                        help="the pass's time budget (beat's is 20 s; larger so that it "
                             "deletes the whole day at once)")
    parser.add_argument("--timeout", type=float, default=600)
    parser.add_argument("--out", default="scale")
    parser.add_argument("--keep", action="store_true",
                        help="keep the database afterwards (to EXPLAIN on it); drop it yourself")
    args = parser.parse_args(argv)
    if args.keep:
        env.keep()
    sizes = [int(s) for s in args.sizes.split(",")]
    if sizes != sorted(sizes):
        raise SystemExit("--sizes must grow")

    from app.core.registry import manifest

    queue = manifest.get(ECHO).queue
    setup(args.tenants)
    tenant_ids = [r[0] for r in sql("SELECT id::text FROM bench_tenants ORDER BY n LIMIT 50")]
    results = []
    filled = deleted = 0
    if env.REUSE_DB:  # grow on from what an earlier run left
        [(filled, have)] = sql("SELECT count(*), count(*) FILTER (WHERE status IN "
                               "('completed', 'failed', 'cancelled')) FROM job_executions")
        deleted = filled - have
        print(f"reusing {env.DB_NAME}: {have:,} finished jobs", flush=True)
    started = time.monotonic()
    for size in sizes:
        print(f"size {size:,}", flush=True)
        t0 = time.monotonic()
        have = filled - deleted
        fill(filled, filled + max(0, size - have), tenants=args.tenants, days=args.days)
        filled += max(0, size - have)
        fill_s = time.monotonic() - t0
        t0 = time.monotonic()
        raw("VACUUM ANALYZE job_executions")
        raw("VACUUM ANALYZE job_events")
        print(f"  vacuum analyze {time.monotonic() - t0:.0f} s", flush=True)
        result = measure(size, args, queue, tenant_ids)
        result["fill_s"] = round(fill_s, 1)
        deleted += result["deleted_jobs"]
        results.append(result)

    first, last = results[0], results[-1]
    growth = {key: round(last[key] / first[key], 2) if first.get(key) else None
              for _, key, _ in ROWS if key in first and key in last}
    print_table(f"Cost as the table grows ({args.pending:,} pending over {args.tenants:,} "
                f"tenants)", ["measure", *(f"{s:,}" for s in sizes),
                              f"× {sizes[0]:,} → {sizes[-1]:,}"],
                [(label + (" *" if hot else ""), *(r.get(key, "-") for r in results),
                  growth.get(key, "-")) for label, key, hot in ROWS])
    print("* hot path: target ≤ 1.5× growth; jobq stats over a day < 1 s")
    path = write_result(args.out, {
        "sizes": sizes, "pending": args.pending, "tenants": args.tenants, "days": args.days,
        "reps": args.reps, "claims": args.claims, "total_s": round(time.monotonic() - started),
        "rows": ROWS, "growth": growth, "runs": results,
    })
    print(f"written {path}")


if __name__ == "__main__":
    main()
