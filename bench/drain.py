"""Drain throughput: N jobs enqueued first, then workers started; jobs per second until the
last one completed, and machine CPU per job split by process (worker, PostgreSQL, Redis; see
bench/cpu.py), for each entry path per worker set-up.

    python -m bench drain [--jobs 3000] [--rounds 3] [--setups plain,jobq-run]
                          [--paths stock,bare,submit,dispatch,sql]

Paths: ``stock`` is Celery as people run it (bench/stock.py: ``celery -A bench.stock worker
-c <cores> -E``, prefork, prefetch 4, early ack), whatever the set-up: it is run once in every
set-up's group, so each ratio compares runs minutes apart. ``bare`` is jobq's own Celery
settings (prefetch 1, late ack, events) with a no-op task, on the set-up's worker arguments.
``submit``, ``dispatch`` (``dispatch_intent``) and ``sql`` (a plain INSERT, swept by beat) are
jobq's entry paths; on every set-up they run with beat beside the workers, as ``jobq run``
runs them (beat is started first and waited for, so its start-up is outside the drain). Every run reports jobs/s, × stock (same set-up group) and × bare (same
set-up), and CPU ms per job with its ratio to bare's on the same set-up.

Set-ups: ``plain`` is ``celery -A app worker`` with no pool or queue flags (prefork, -c =
cores; jobq's task_queues make it consume every queue); ``jobq-run`` starts the workers
``jobq run`` starts (app.ops.workers), and for ``bare`` the same processes with the realtime
workers on bench.bare's queue (the bulk worker stays, idle, as beside jobq's paths; it is
started first and waited for, so its start-up is outside the drain). The other set-ups
(prefork2, solo2, ...) pass their pool flags plus ``-Q`` of every queue. The workers that take
the jobs start together after the enqueueing; their own start-up may overlap the first jobs
(and their CPU window) a little: short runs (``--jobs 2000``) show it most.

Stock and bare end when the broker holds none of their messages (waiting or unacknowledged);
stock acknowledges early (as a pool process accepts the task), so its span ends as its last
no-op starts, with at most -c no-ops still running (microseconds of work); jobq's paths end at
the last ``completed_at``.
"""

from __future__ import annotations

import argparse
import functools
import os
import resource
import statistics
import time
import uuid
from collections.abc import Sequence
from typing import Any

from bench import env  # first: sets up the environment
from bench.common import (
    broker_backlog,
    celery_beat,
    celery_worker,
    make_tenant,
    print_table,
    reset_jobs,
    stop_all,
    targets,
    write_result,
)
from bench.cpu import GROUPS, CpuSampler, per_job, postmaster_pid, redis_pid

#: Worker set-ups: name -> list of worker argument lists (one process each). ``plain`` is
#: ``celery -A app worker`` as it comes; ``jobq-run`` (not listed: app.ops.workers) is what
#: ``jobq run`` starts.
SETUPS: dict[str, list[list[str]]] = {
    "plain": [[]],
    "prefork2": [["-P", "prefork", "-c", "2"]],
    "solo2": [["-P", "solo"], ["-P", "solo"]],
    "solo3": [["-P", "solo"]] * 3,
    "solo4": [["-P", "solo"]] * 4,
    "threads4": [["-P", "threads", "-c", "4"]],
    "prefork1x2": [["-P", "prefork", "-c", "1"], ["-P", "prefork", "-c", "1"]],
}
JOBQ_RUN = "jobq-run"
#: Paths drained from a broker queue of their own (no jobs table): path -> queue.
BROKER_PATHS = {"bare": "bare", "stock": "stock"}
STOCK_ARGS = ["-c", str(os.cpu_count() or 1), "-E"]
STOCK_WORKER = "celery -A bench.stock worker " + " ".join(STOCK_ARGS)
ALL_QUEUES = ("celery", "dispatch", "realtime", "bulk", "maintenance")
ECHO = "system.exec.echo"


def enqueue(path: str, n: int, tenant: str | Sequence[str]) -> float:
    """Put ``n`` jobs in front of the (not yet running) workers, over ``tenant`` (one, or
    several in turn); returns seconds it took."""
    tenants = [tenant] if isinstance(tenant, str) else list(tenant)
    tenant = tenants[0]
    started = time.perf_counter()
    if path == "stock":
        from bench.stock import noop

        for _ in range(n):  # as a user would: one apply_async per job, default settings
            noop.apply_async(kwargs={"tenant_id": tenant, "job_id": str(uuid.uuid4())})
    elif path == "bare":
        from bench.bare import app as bare_app

        with bare_app.producer_or_acquire() as producer:
            for _ in range(n):
                job = str(uuid.uuid4())
                bare_app.send_task("bare.noop", kwargs={"tenant_id": tenant, "job_id": job},
                                   task_id=job, queue="bare", producer=producer)
    elif path == "submit":
        from app.core.validation import Request
        from app.intake.submit import submit_many
        from app.store import db

        for start in range(0, n, 1000):
            with db.session() as session:
                submit_many(session, [Request(tenants[i % len(tenants)], ECHO, {"i": i})
                                      for i in range(start, min(n, start + 1000))])
                session.commit()
    elif path == "dispatch":
        from app.broker.celery_app import celery_app
        from app.tasks.dispatch import dispatch_intent

        with celery_app.producer_or_acquire() as producer:
            for i in range(n):
                dispatch_intent.apply_async(
                    kwargs={"tenant_id": tenants[i % len(tenants)], "intent_key": ECHO,
                            "intent_params": {"i": i}}, producer=producer)
    elif path == "sql":
        from sqlalchemy import text

        from app.store import db

        with db.engine().begin() as conn:
            conn.execute(text(
                "INSERT INTO job_executions (tenant_id, intent_key, intent_params) "
                "SELECT (CAST(:t AS uuid[]))[1 + i % :m], :k, jsonb_build_object('i', i) "
                "FROM generate_series(1, :n) i"),
                {"t": tenants, "m": len(tenants), "k": ECHO, "n": n})
    else:
        raise SystemExit(f"unknown path {path!r}")
    return time.perf_counter() - started


def db_clock() -> Any:
    from sqlalchemy import text

    from app.store import db

    with db.engine().connect() as conn:
        return conn.execute(text("SELECT clock_timestamp()")).scalar_one()


def finished_span(n: int, timeout: float, since: Any) -> tuple[int, float, float]:
    """Wait until ``n`` jobs created at or after ``since`` (the database's clock) are
    completed; ``(done, first start, last completion)``."""
    from sqlalchemy import text

    from app.store import db

    deadline = time.monotonic() + timeout
    while True:
        with db.engine().connect() as conn:
            done, first, last = conn.execute(text(
                "SELECT count(*) FILTER (WHERE status = 'completed'), "
                "extract(epoch FROM min(coalesce(executed_at, created_at))), "
                "extract(epoch FROM max(completed_at)) FROM job_executions "
                "WHERE created_at >= :since"), {"since": since}).one()
        if done >= n or time.monotonic() > deadline:
            return done, float(first or 0), float(last or 0)
        time.sleep(0.2)


def workers(setup: str, path: str) -> list[tuple[str, str, list[str], bool]]:
    """``(app, name, worker arguments, quiet)`` of each process ``path`` runs on ``setup``."""
    if path == "stock":  # always as people run it, whatever the set-up
        return [("bench.stock", "stock", list(STOCK_ARGS), False)]
    app_name = "bench.bare" if path == "bare" else "app"
    if setup == JOBQ_RUN:
        from app.ops.workers import WORKERS, worker_args

        out = []
        for name in WORKERS:
            args = worker_args(name)
            i = args.index("-n")  # celery_worker names the node itself
            args = args[:i] + args[i + 2:]
            q = args.index("-Q") + 1
            if path == "bare" and "realtime" in args[q].split(","):
                args[q] = "bare"
                out.append(("bench.bare", name, args, True))
            else:  # bare: the bulk worker stays, idle, as it is beside jobq's own paths
                out.append(("app", name, args, True))
        return out
    if setup not in SETUPS:
        raise SystemExit(f"unknown set-up {setup!r}: {', '.join([*SETUPS, JOBQ_RUN])}")
    if setup == "plain":  # bench.bare's and jobq's task_queues: all their queues without -Q
        return [(app_name, f"{setup}-{i}", list(a), True) for i, a in enumerate(SETUPS[setup])]
    queues = "bare" if path == "bare" else ",".join(ALL_QUEUES)
    return [(app_name, f"{setup}-{i}", [*a, "-Q", queues], True)
            for i, a in enumerate(SETUPS[setup])]


@functools.cache
def _servers() -> tuple[int | None, int | None]:
    return postmaster_pid(), redis_pid()


def wait_broker_drained(path: str, initial: int, timeout: float) -> tuple[float, float]:
    """``(first ack, queue and unacked hash empty)``, wall clock, for a broker-only path."""
    queues = [BROKER_PATHS[path]]
    deadline = time.monotonic() + timeout
    t0 = None
    while time.monotonic() < deadline:
        backlog = broker_backlog(queues)
        now = time.time()
        if t0 is None and backlog < initial:
            t0 = now
        if t0 is not None and backlog == 0:
            return t0, now
        time.sleep(0.005)
    raise SystemExit(f"{path} drain timed out with {backlog} left")


def idle(app_name: str, args: list[str]) -> bool:
    """A jobq worker that takes none of the drain's messages (``jobq run``'s bulk worker: echo
    jobs and dispatches are realtime and dispatch work)."""
    return app_name == "app" and "-Q" in args and "realtime" not in args[args.index("-Q") + 1]


def start_idle(procs: list, app_name: str, name: str, args: list[str]) -> None:
    """Start a worker that stays idle and wait until it answers a ping, so its start-up
    neither competes with the drain for the cores nor counts in its CPU window."""
    from app.broker.celery_app import celery_app

    proc = celery_worker(app_name, name, *args)
    procs.append(proc)
    deadline = time.monotonic() + 90
    while not celery_app.control.ping(destination=[proc.name], timeout=0.5):
        if proc.popen.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"worker {proc.name} did not start; see {proc.log}")


def enqueue_measured(path: str, n: int, tenant: str | Sequence[str], postmaster: int | None,
                     redis_server: int | None) -> tuple[float, dict[str, float]]:
    """:func:`enqueue`, and the CPU it cost: the calling process (this one), PostgreSQL, Redis."""
    sampler = CpuSampler([], postmaster=postmaster, redis=redis_server, database=env.DB_NAME)
    sampler.start()
    own = resource.getrusage(resource.RUSAGE_SELF)
    t0 = time.time()
    try:
        seconds = enqueue(path, n, tenant)
    finally:
        t1 = time.time()
        done = resource.getrusage(resource.RUSAGE_SELF)
        sampler.stop()
    cpu = sampler.between(t0, t1)
    # The caller's CPU takes the worker group's place: nobody else runs while it enqueues.
    cpu["worker"] = round(done.ru_utime + done.ru_stime - own.ru_utime - own.ru_stime, 3)
    return seconds, cpu


#: The tables whose rows a job's trip writes (bench figures "rows written per job").
WRITTEN_TABLES = ("job_executions", "job_events", "fair_queue", "fair_clock")


def table_writes() -> dict[str, dict[str, int]]:
    """Rows inserted, updated (and of those, HOT) and deleted so far in the hot tables, and the
    database's commits: counted by PostgreSQL whatever else the machine does, so a run's work
    per job compares across runs and machines where its seconds do not. Read after every
    process that wrote has ended (a backend reports its counts as its transactions end, at the
    latest as it exits)."""
    from sqlalchemy import text

    from app.store import db

    with db.engine().connect() as conn:
        conn.execute(text("SELECT pg_stat_clear_snapshot()"))
        rows = conn.execute(text(
            "SELECT relname, n_tup_ins, n_tup_upd, n_tup_hot_upd, n_tup_del "
            "FROM pg_stat_user_tables WHERE relname = ANY(:t)"),
            {"t": list(WRITTEN_TABLES)}).all()
        commits = conn.execute(text("SELECT xact_commit FROM pg_stat_database "
                                    "WHERE datname = current_database()")).scalar_one()
    found = {r[0]: {"inserted": r[1], "updated": r[2], "hot": r[3], "deleted": r[4]}
             for r in rows}
    found["database"] = {"commits": commits}
    return found


def writes_line(written: dict[str, dict[str, float]]) -> str:
    """``written_per_job`` in a line: rows inserted/updated (HOT of those) per table, commits."""
    parts = []
    for table, w in written.items():
        if table == "database":
            continue
        done = [f"{w['inserted']:g} ins"] if w["inserted"] else []
        if w["updated"]:
            done.append(f"{w['updated']:g} upd ({w['hot']:g} HOT)")
        if done:
            parts.append(f"{table} {', '.join(done)}")
    return "; ".join(parts) + f"; {written['database']['commits']:g} commits"


def writes_per_job(before: dict, after: dict, n: int) -> dict[str, dict[str, float]]:
    """What a job's whole trip wrote (asked for, fed, run, recorded), per job: rows per table
    and kind, and commits (the bench's own read-only polling commits too: about one per 50 ms
    of the run)."""
    return {table: {kind: round((after[table][kind] - before[table].get(kind, 0)) / n, 2)
                    for kind in after[table]}
            for table in after if table in before}


def run_one(path: str, setup: str, n: int, tenant: str | Sequence[str], timeout: float,
            keep_finished: bool = False) -> dict:
    """One drain of ``n`` jobs over ``tenant`` (one, or several in turn). ``keep_finished``:
    the table's finished jobs stay (a filled table, see bench/academies.py)."""
    reset_jobs(keep_finished)
    postmaster, redis_server = _servers()
    since = db_clock()
    written_before = table_writes()
    enqueue_s, enqueue_cpu = enqueue_measured(path, n, tenant, postmaster, redis_server)
    queues = [BROKER_PATHS[path]] if path in BROKER_PATHS else list(ALL_QUEUES)
    procs = []
    initial = broker_backlog(queues)
    sampler = CpuSampler([], postmaster=postmaster, redis=redis_server, database=env.DB_NAME)
    sampler.start()
    try:
        plan = workers(setup, path)
        if path not in BROKER_PATHS:  # jobq's paths: beat beside the workers, as jobq run has
            procs.append(celery_beat(wait=True))
        for app_name, name, args, _ in plan:
            if idle(app_name, args):
                start_idle(procs, app_name, f"{setup}-{name}", args)
        for app_name, name, args, quiet in plan:
            if not idle(app_name, args):
                procs.append(celery_worker(app_name, f"{setup}-{name}", *args, quiet=quiet))
        sampler.add_sessions(p.popen.pid for p in procs)  # start_new_session: sid = pid
        if path in BROKER_PATHS:
            t0, t_end = wait_broker_drained(path, initial, timeout)
        else:
            done, t0, t_end = finished_span(n, timeout, since)
            if done < n:
                raise SystemExit(f"{path}/{setup}: only {done} of {n} completed in {timeout}s")
    finally:
        sampler.stop()
        stop_all(procs)
    seconds = t_end - t0
    cpu = sampler.between(t0, t_end)
    time.sleep(1.5)  # backends report their counts as they exit or after a second idle
    written = writes_per_job(written_before, table_writes(), n)
    return {"path": path, "setup": setup, "workers": [" ".join(["-A", a, *w]) for a, _, w, _ in
                                                      workers(setup, path)],
            "beat": path not in BROKER_PATHS,
            "jobs": n, "seconds": round(seconds, 3), "jobs_per_s": round(n / seconds, 1),
            "enqueue_s": round(enqueue_s, 2), "cpu_s": cpu, "cpu_ms_per_job": per_job(cpu, n),
            # Asking for the jobs (the caller's process, PostgreSQL, Redis; "worker" is the
            # caller here), and asking + draining: what a job costs the machine end to end.
            "enqueue_cpu_ms_per_job": (eq := per_job(enqueue_cpu, n)),
            "end_to_end_cpu_ms_per_job": round(eq["total"] + per_job(cpu, n)["total"], 3),
            "written_per_job": written}


def add_ratios(runs: list[dict]) -> None:
    """× stock of the same set-up group, × bare of the same set-up, for jobs/s and CPU/job."""
    stock = {r["setup"]: r for r in runs if r["path"] == "stock"}
    bare = {r["setup"]: r for r in runs if r["path"] == "bare"}
    for r in runs:
        if s := stock.get(r["setup"]):
            r["ratio_vs_stock"] = round(r["jobs_per_s"] / s["jobs_per_s"], 3)
            r["cpu_ratio_vs_stock"] = round(r["cpu_ms_per_job"]["total"]
                                            / s["cpu_ms_per_job"]["total"], 3)
            r["end_to_end_cpu_ratio_vs_stock"] = round(r["end_to_end_cpu_ms_per_job"]
                                                       / s["end_to_end_cpu_ms_per_job"], 3)
        if b := bare.get(r["setup"]):
            r["ratio_vs_bare_same_setup"] = round(r["jobs_per_s"] / b["jobs_per_s"], 3)
            r["cpu_ratio_vs_bare_same_setup"] = round(r["cpu_ms_per_job"]["total"]
                                                      / b["cpu_ms_per_job"]["total"], 3)
            r["end_to_end_cpu_ratio_vs_bare_same_setup"] = round(
                r["end_to_end_cpu_ms_per_job"] / b["end_to_end_cpu_ms_per_job"], 3)


def medians(rounds: list[list[dict]]) -> list[dict]:
    """Per (set-up, path), the median of every figure over ``rounds`` (each a full invocation's
    runs with its ratios, so a ratio's median is of ratios measured in one round)."""
    out = []
    for first in rounds[0]:
        same = [r for runs in rounds for r in runs
                if r["setup"] == first["setup"] and r["path"] == first["path"]]
        merged = dict(first, rounds=len(same))
        for key, value in first.items():
            if isinstance(value, int | float) and not isinstance(value, bool):
                merged[key] = round(statistics.median(r[key] for r in same if key in r), 3)
            elif isinstance(value, dict):
                merged[key] = {k: round(statistics.median(r[key][k] for r in same
                                                          if key in r), 3)
                               for k, v in value.items() if isinstance(v, int | float)}
        out.append(merged)
    return out


def issue24(runs: list[dict]) -> list[tuple[str, float | None, str]]:
    """Issue 24's drain figures from the medians (each ratio a median of per-round ratios)."""
    by = {(r["setup"], r["path"]): r for r in runs}

    def get(setup: str, path: str, key: str) -> float | None:
        return by.get((setup, path), {}).get(key)

    return [
        ("submit drain, plain worker / stock", get("plain", "submit", "ratio_vs_stock"), "≥ 1.0×"),
        ("submit drain, jobq run's workers / stock", get(JOBQ_RUN, "submit", "ratio_vs_stock"),
         "≥ 1.5×"),
        ("audited jobs/s, submit, jobq run's workers", get(JOBQ_RUN, "submit", "jobs_per_s"),
         "stretch 2,000/s"),
        ("dispatch_intent drain, plain worker / stock", get("plain", "dispatch",
                                                            "ratio_vs_stock"), "≥ 0.8×"),
        ("CPU per audited job (ask + drain) / bare, submit, jobq run",
         get(JOBQ_RUN, "submit", "end_to_end_cpu_ratio_vs_bare_same_setup"), "≤ 1.3×"),
        ("CPU per audited job (ask + drain) / bare, submit, plain worker",
         get("plain", "submit", "end_to_end_cpu_ratio_vs_bare_same_setup"), "≤ 1.3×"),
    ]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench drain", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=3_000)
    parser.add_argument("--setups", default=f"plain,{JOBQ_RUN}",
                        help=f"of {', '.join([*SETUPS, JOBQ_RUN])}")
    parser.add_argument("--paths", default="stock,bare,submit,dispatch,sql")
    parser.add_argument("--timeout", type=float, default=600)
    parser.add_argument("--rounds", type=int, default=3,
                        help="run everything this many times; print and keep the medians")
    args = parser.parse_args(argv)
    tenant = make_tenant()
    rounds = []
    for i in range(args.rounds):
        runs = []
        for setup in args.setups.split(","):
            for path in args.paths.split(","):
                r = run_one(path, setup, args.jobs, tenant, args.timeout)
                ms = r["cpu_ms_per_job"]
                print(f"[{i + 1}] {setup:>10} {path:>8}: {r['jobs_per_s']:>8,.0f} jobs/s "
                      f"({r['seconds']:.1f}s), CPU ms/job "
                      + " ".join(f"{g} {ms[g]:.2f}" for g in (*GROUPS, "total")), flush=True)
                if path not in BROKER_PATHS:
                    print(f"    rows written per job: {writes_line(r['written_per_job'])}",
                          flush=True)
                runs.append(r)
        add_ratios(runs)
        rounds.append(runs)
    runs = medians(rounds)
    print_table(f"Drain throughput, {args.jobs:,} jobs of {ECHO}, median of {args.rounds} "
                f"round(s) (stock = {STOCK_WORKER} in every set-up)",
                ["set-up", "path", "jobs/s", "× stock", "× bare same set-up", "CPU ms/job worker",
                 "PostgreSQL", "Redis", "total", "CPU × bare", "+ asking: ms/job",
                 "× bare"],
                [(r["setup"], r["path"], r["jobs_per_s"], r.get("ratio_vs_stock", "-"),
                  r.get("ratio_vs_bare_same_setup", "-"),
                  *(r["cpu_ms_per_job"][g] for g in (*GROUPS, "total")),
                  r.get("cpu_ratio_vs_bare_same_setup", "-"), r["end_to_end_cpu_ms_per_job"],
                  r.get("end_to_end_cpu_ratio_vs_bare_same_setup", "-")) for r in runs])
    path = write_result("drain", {"jobs": args.jobs, "stock_worker": STOCK_WORKER,
                                  "rounds": args.rounds, "runs": runs,
                                  "targets": targets(issue24(runs)),
                                  "each_round": rounds if args.rounds > 1 else None})
    print(f"written {path}")


if __name__ == "__main__":
    main()
