"""Latency at light load: jobs asked for at a steady rate (default 20/s for 30 s) through each
entry path, on the worker set-up ``jobq run`` uses, with beat running; the time from the call
to ``processing`` and to ``completed``, p50 and p99.

    python -m bench latency [--rate 20] [--seconds 30] [--paths submit,dispatch_intent,sql,stock]
                            [--rounds 1]

Issue 24's figure (``submit`` → completed, p50 and p99, × stock's, medians of 3 rounds):
``python -m bench latency --paths submit,stock --rounds 3``.

``stock`` is stock Celery as people run it (bench/stock.py, ``celery -A bench.stock worker -c
<cores> -E``, alone on the machine after jobq's workers stopped): ``apply_async`` of a no-op at
the same rate; it has no jobs table, so its times come from the worker's ``task-started`` and
``task-succeeded`` events (what ``-E`` sends; their timestamps are the worker's clock, the same
machine's), caught by an event receiver in the bench process.
"""

from __future__ import annotations

import argparse
import os
import threading
import time
import uuid

from bench import env  # noqa: F401  (first: sets up the environment)
from bench.common import (
    celery_beat,
    celery_worker,
    make_tenant,
    median,
    percentile,
    print_table,
    reset_jobs,
    stop_all,
    targets,
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
    asked = paced(n, rate, lambda i: ask(path, tenant, i))
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


def report(r: dict) -> None:
    print(f"{r['path']:>16}: to completed p50 {r['done_p50_ms']:,.1f} ms, "
          f"p99 {r['done_p99_ms']:,.1f} ms ({r['completed']} of {r['jobs']})", flush=True)


def paced(n: int, rate: float, call) -> dict[int, float]:
    """Call ``call(i)`` ``n`` times at ``rate`` per second; ``{i: wall time of the call}``."""
    asked: dict[int, float] = {}
    start = time.perf_counter()
    for i in range(n):
        target = start + i / rate
        while (now := time.perf_counter()) < target:
            time.sleep(min(0.002, target - now))
        asked[i] = time.time()
        call(i)
    return asked


def measure_stock(rate: float, seconds: float) -> dict:
    """Stock Celery's call → started / succeeded, from its worker's task events."""
    from bench.stock import app as stock_app
    from bench.stock import noop

    started: dict[str, float] = {}
    done: dict[str, float] = {}

    def on_event(event: dict) -> None:
        (started if event["type"] == "task-started" else done)[event["uuid"]] = event["timestamp"]

    proc = celery_worker("bench.stock", "stock", "-c", str(os.cpu_count() or 1), "-E",
                         quiet=False)
    receiver = None
    try:
        deadline = time.monotonic() + 90
        while not stock_app.control.ping(destination=[proc.name], timeout=0.5):
            if proc.popen.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"stock worker did not start; see {proc.log}")
        conn = stock_app.connection_for_read()
        receiver = stock_app.events.Receiver(conn, handlers={"task-started": on_event,
                                                             "task-succeeded": on_event})
        listener = threading.Thread(target=receiver.capture,
                                    kwargs={"limit": None, "timeout": None, "wakeup": False},
                                    daemon=True)
        listener.start()
        time.sleep(2)  # subscribed, workers idle
        n = int(rate * seconds)
        ids = [str(uuid.uuid4()) for _ in range(n)]
        asked = paced(n, rate, lambda i: noop.apply_async(
            kwargs={"tenant_id": None, "job_id": ids[i]}, task_id=ids[i]))
        deadline = time.monotonic() + 60
        while len(done) < n and time.monotonic() < deadline:
            time.sleep(0.2)
    finally:
        if receiver is not None:
            receiver.should_stop = True
        proc.stop()
    to_start = [(started[t] - asked[i]) * 1000 for i, t in enumerate(ids) if t in started]
    to_done = [(done[t] - asked[i]) * 1000 for i, t in enumerate(ids) if t in done]
    return {"path": "stock", "jobs": n, "completed": len(to_done),
            "start_p50_ms": round(percentile(to_start, 50), 1),
            "start_p99_ms": round(percentile(to_start, 99), 1),
            "done_p50_ms": round(percentile(to_done, 50), 1),
            "done_p99_ms": round(percentile(to_done, 99), 1)}


def one_round(paths: list[str], tenant: str, rate: float, seconds: float) -> list[dict]:
    """Each jobq path on ``jobq run``'s workers and beat, then stock alone; with × stock."""
    from app.ops.workers import WORKERS, worker_args

    procs = [celery_beat(wait=True)]
    for name in WORKERS:
        # celery_worker names the node itself; drop the set-up's -n.
        args_ = worker_args(name)
        i = args_.index("-n")
        procs.append(celery_worker("app", name, *args_[:i], *args_[i + 2:]))
    from app.broker.celery_app import celery_app

    deadline = time.monotonic() + 90
    for proc in procs[1:]:  # every worker answers (a loaded machine starts them slowly) ...
        while not celery_app.control.ping(destination=[proc.name], timeout=0.5):
            if proc.popen.poll() is not None or time.monotonic() > deadline:
                stop_all(procs)
                raise SystemExit(f"worker {proc.name} did not start; see {proc.log}")
    time.sleep(2)  # ... and is idle
    results = []
    try:
        for path in paths:
            if path != "stock":
                results.append(measure(path, tenant, rate, seconds))
                report(results[-1])
    finally:
        stop_all(procs)
    if "stock" in paths:  # alone, after jobq's workers and beat stopped
        results.append(measure_stock(rate, seconds))
        report(results[-1])
        stock = results[-1]
        for r in results:
            for key in ("done_p50_ms", "done_p99_ms"):
                r[f"{key}_vs_stock"] = round(r[key] / stock[key], 3) if stock[key] else None
    return results


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench latency", description=__doc__)
    parser.add_argument("--rate", type=float, default=20)
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument("--paths", default="submit,dispatch_intent,sql,stock")
    parser.add_argument("--rounds", type=int, default=1,
                        help="run everything this many times; print and keep the medians")
    args = parser.parse_args(argv)
    tenant = make_tenant()
    paths = args.paths.split(",")
    rounds = [one_round(paths, tenant, args.rate, args.seconds) for _ in range(args.rounds)]
    results = []
    for first in rounds[0]:  # per path, the median of each figure (ratios: of each round's)
        same = [r for runs in rounds for r in runs if r["path"] == first["path"]]
        results.append({k: (median([r[k] for r in same if r.get(k) is not None])
                            if isinstance(v, float) else v) for k, v in first.items()})
    print_table(f"Latency at {args.rate:g} jobs/s for {args.seconds:g} s (ms from the call; "
                "stock: celery -A bench.stock worker -c cores -E, alone; median of "
                f"{args.rounds} round(s))",
                ["path", "→ processing p50", "p99", "→ completed p50", "p99",
                 "completed p50 × stock", "p99 × stock"],
                [(r["path"], r["start_p50_ms"], r["start_p99_ms"], r["done_p50_ms"],
                  r["done_p99_ms"], r.get("done_p50_ms_vs_stock", "-"),
                  r.get("done_p99_ms_vs_stock", "-")) for r in results])
    by = {r["path"]: r for r in results}
    found = targets([(f"submit → completed at {args.rate:g} jobs/s, {q} × stock's",
                      by.get("submit", {}).get(f"done_{q}_ms_vs_stock"), "≤ 1.5×")
                     for q in ("p50", "p99")])
    print(f"written {write_result('latency', {'rate': args.rate, 'seconds': args.seconds, 'rounds': args.rounds, 'runs': results, 'targets': found, 'each_round': rounds if args.rounds > 1 else None})}")


if __name__ == "__main__":
    main()
