"""Drain throughput: N jobs enqueued first, then workers started; jobs per second until the
last one completed, for bare Celery and for each jobq entry path, per worker set-up.

    python -m bench drain [--jobs 20000] [--setups prefork2,solo2] [--paths bare,submit,dispatch,sql]
"""

from __future__ import annotations

import argparse
import time
import uuid

from bench import env  # noqa: F401  (first: sets up the environment)
from bench.common import (
    broker_backlog,
    celery_beat,
    celery_worker,
    make_tenant,
    print_table,
    reset_jobs,
    stop_all,
    write_result,
)

#: Worker set-ups: name -> list of worker argument lists (one process each).
SETUPS: dict[str, list[list[str]]] = {
    "prefork2": [["-P", "prefork", "-c", "2"]],
    "solo2": [["-P", "solo"], ["-P", "solo"]],
    "solo3": [["-P", "solo"]] * 3,
    "solo4": [["-P", "solo"]] * 4,
    "threads4": [["-P", "threads", "-c", "4"]],
    "prefork1x2": [["-P", "prefork", "-c", "1"], ["-P", "prefork", "-c", "1"]],
}
ALL_QUEUES = ("celery", "dispatch", "realtime", "bulk", "maintenance")
ECHO = "system.exec.echo"


def enqueue(path: str, n: int, tenant: str) -> float:
    """Put ``n`` jobs in front of the (not yet running) workers; returns seconds it took."""
    started = time.perf_counter()
    if path == "bare":
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
                submit_many(session, [Request(tenant, ECHO, {"i": i})
                                      for i in range(start, min(n, start + 1000))])
                session.commit()
    elif path == "dispatch":
        from app.broker.celery_app import celery_app
        from app.tasks.dispatch import dispatch_intent

        with celery_app.producer_or_acquire() as producer:
            for i in range(n):
                dispatch_intent.apply_async(
                    kwargs={"tenant_id": tenant, "intent_key": ECHO, "intent_params": {"i": i}},
                    producer=producer)
    elif path == "sql":
        from sqlalchemy import text

        from app.store import db

        with db.engine().begin() as conn:
            conn.execute(text(
                "INSERT INTO job_executions (tenant_id, intent_key, intent_params) "
                "SELECT CAST(:t AS uuid), :k, jsonb_build_object('i', i) "
                "FROM generate_series(1, :n) i"), {"t": tenant, "k": ECHO, "n": n})
    else:
        raise SystemExit(f"unknown path {path!r}")
    return time.perf_counter() - started


def finished_span(n: int, timeout: float) -> tuple[int, float, float]:
    """Wait until ``n`` jobs are completed; ``(done, first start, last completion)``."""
    from sqlalchemy import text

    from app.store import db

    deadline = time.monotonic() + timeout
    while True:
        with db.engine().connect() as conn:
            done, first, last = conn.execute(text(
                "SELECT count(*) FILTER (WHERE status = 'completed'), "
                "extract(epoch FROM min(coalesce(executed_at, created_at))), "
                "extract(epoch FROM max(completed_at)) FROM job_executions")).one()
        if done >= n or time.monotonic() > deadline:
            return done, float(first or 0), float(last or 0)
        time.sleep(0.2)


def run_one(path: str, setup: str, n: int, tenant: str, timeout: float) -> dict:
    reset_jobs()
    enqueue_s = enqueue(path, n, tenant)
    app_name = "bench.bare" if path == "bare" else "app"
    queues = ["bare"] if path == "bare" else list(ALL_QUEUES)
    procs = []
    if path == "sql":
        procs.append(celery_beat())
    initial = broker_backlog(queues)
    for i, args in enumerate(SETUPS[setup]):
        procs.append(celery_worker(app_name, f"{setup}-{i}", *args, "-Q", ",".join(queues)))
    try:
        if path == "bare":
            deadline = time.monotonic() + timeout
            t0 = None
            while time.monotonic() < deadline:
                backlog = broker_backlog(queues)
                now = time.time()
                if t0 is None and backlog < initial:
                    t0 = now
                if t0 is not None and backlog == 0:
                    t_end, done = now, n
                    break
                time.sleep(0.005)
            else:
                raise SystemExit(f"bare drain timed out with {backlog} left")
        else:
            done, t0, t_end = finished_span(n, timeout)
            if done < n:
                raise SystemExit(f"{path}/{setup}: only {done} of {n} completed in {timeout}s")
    finally:
        stop_all(procs)
    seconds = t_end - t0
    return {"path": path, "setup": setup, "jobs": n, "seconds": round(seconds, 3),
            "jobs_per_s": round(n / seconds, 1), "enqueue_s": round(enqueue_s, 2)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench drain", description=__doc__)
    parser.add_argument("--jobs", type=int, default=20_000)
    parser.add_argument("--setups", default="prefork2,solo2")
    parser.add_argument("--paths", default="bare,submit,dispatch,sql")
    parser.add_argument("--timeout", type=float, default=600)
    args = parser.parse_args(argv)
    tenant = make_tenant()
    runs = []
    for setup in args.setups.split(","):
        for path in args.paths.split(","):
            result = run_one(path, setup, args.jobs, tenant, args.timeout)
            print(f"{setup:>10} {path:>8}: {result['jobs_per_s']:>8,.0f} jobs/s "
                  f"({result['seconds']:.1f}s)", flush=True)
            runs.append(result)
    base = {r["setup"]: r["jobs_per_s"] for r in runs if r["path"] == "bare"}
    default_bare = base.get("prefork2")
    for r in runs:
        if r["setup"] in base:
            r["ratio_vs_bare_same_setup"] = round(r["jobs_per_s"] / base[r["setup"]], 3)
        if default_bare:
            r["ratio_vs_bare_prefork2"] = round(r["jobs_per_s"] / default_bare, 3)
    print_table(f"Drain throughput, {args.jobs:,} jobs of {ECHO}",
                ["set-up", "path", "jobs/s", "× bare (same set-up)", "× bare prefork2"],
                [(r["setup"], r["path"], r["jobs_per_s"], r.get("ratio_vs_bare_same_setup", "-"),
                  r.get("ratio_vs_bare_prefork2", "-")) for r in runs])
    path = write_result("drain", {"jobs": args.jobs, "runs": runs})
    print(f"written {path}")


if __name__ == "__main__":
    main()
