"""Latency at light load: jobs asked for at a steady rate (default 20/s for 30 s) through each
entry path, on the worker set-up ``jobq run`` uses, with beat running; the time from the call
to ``processing`` and to ``completed``, p50 and p99.

    python -m bench latency [--rate 20] [--seconds 30]
"""

from __future__ import annotations

import argparse
import time

from bench import env  # noqa: F401  (first: sets up the environment)
from bench.common import (
    celery_beat,
    celery_worker,
    make_tenant,
    percentile,
    print_table,
    reset_jobs,
    stop_all,
    write_result,
)

ECHO = "system.exec.echo"


def ask(path: str, tenant: str, i: int) -> str | None:
    from sqlalchemy import text

    from app.intake.submit import submit
    from app.store import db
    from app.tasks.dispatch import dispatch_intent

    if path == "submit":
        with db.session() as session:
            job = submit(session, tenant_id=tenant, intent_key=ECHO, intent_params={"i": i})
            session.commit()
        return job
    if path == "dispatch_intent":
        dispatch_intent.delay(tenant_id=tenant, intent_key=ECHO, intent_params={"i": i})
        return None
    with db.engine().begin() as conn:
        return conn.execute(text(
            "INSERT INTO job_executions (tenant_id, intent_key, intent_params) "
            "VALUES (CAST(:t AS uuid), :k, jsonb_build_object('i', CAST(:i AS int))) "
            "RETURNING id::text"), {"t": tenant, "k": ECHO, "i": i}).scalar_one()


def measure(path: str, tenant: str, rate: float, seconds: float) -> dict:
    from sqlalchemy import text

    from app.store import db

    reset_jobs()
    n = int(rate * seconds)
    asked: dict[int, float] = {}
    start = time.perf_counter()
    for i in range(n):
        target = start + i / rate
        while (now := time.perf_counter()) < target:
            time.sleep(min(0.002, target - now))
        asked[i] = time.time()
        ask(path, tenant, i)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        with db.engine().connect() as conn:
            rows = conn.execute(text(
                "SELECT (intent_params->>'i')::int, extract(epoch FROM executed_at), "
                "extract(epoch FROM completed_at) FROM job_executions "
                "WHERE status = 'completed'")).all()
        if len(rows) >= n:
            break
        time.sleep(0.5)
    to_start = [(float(s) - asked[i]) * 1000 for i, s, _ in rows]
    to_done = [(float(c) - asked[i]) * 1000 for i, _, c in rows]
    return {"path": path, "jobs": n, "completed": len(rows),
            "start_p50_ms": round(percentile(to_start, 50), 1),
            "start_p99_ms": round(percentile(to_start, 99), 1),
            "done_p50_ms": round(percentile(to_done, 50), 1),
            "done_p99_ms": round(percentile(to_done, 99), 1)}


def main(argv: list[str] | None = None) -> None:
    from app.ops.workers import WORKERS, worker_args

    parser = argparse.ArgumentParser(prog="python -m bench latency", description=__doc__)
    parser.add_argument("--rate", type=float, default=20)
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument("--paths", default="submit,dispatch_intent,sql")
    args = parser.parse_args(argv)
    tenant = make_tenant()
    procs = [celery_beat()]
    for name in WORKERS:
        # celery_worker names the node itself; drop the set-up's -n.
        args_ = worker_args(name)
        i = args_.index("-n")
        procs.append(celery_worker("app", name, *args_[:i], *args_[i + 2:]))
    time.sleep(6)  # workers up and idle
    results = []
    try:
        for path in args.paths.split(","):
            r = measure(path, tenant, args.rate, args.seconds)
            results.append(r)
            print(f"{path:>16}: to completed p50 {r['done_p50_ms']:,.1f} ms, "
                  f"p99 {r['done_p99_ms']:,.1f} ms", flush=True)
    finally:
        stop_all(procs)
    print_table(f"Latency at {args.rate:g} jobs/s for {args.seconds:g} s (ms from the call)",
                ["path", "→ processing p50", "p99", "→ completed p50", "p99"],
                [(r["path"], r["start_p50_ms"], r["start_p99_ms"], r["done_p50_ms"],
                  r["done_p99_ms"]) for r in results])
    print(f"written {write_result('latency', {'rate': args.rate, 'seconds': args.seconds, 'runs': results})}")


if __name__ == "__main__":
    main()
