"""Publish rate from one process: calls per second of each way of asking for a job, beside
two baselines on the same broker: stock Celery's ``apply_async`` of a no-op task (bench/stock.py:
Celery's defaults, as people write it) and bare Celery's (jobq's own Celery settings, which
add a ``task-sent`` event per call and publish retries).

    python -m bench publish [--calls 5000]

``submit`` is measured twice: committing after every call (the caller's transaction holds
nothing else), and inside a caller's transaction of 100 calls. ``submit_many`` writes 1,000
jobs per call.
"""

from __future__ import annotations

import argparse
import time
import uuid

from bench import env  # noqa: F401  (first: sets up the environment)
from bench.common import make_tenant, print_table, reset_jobs, write_result

ECHO = "system.exec.echo"


def stock(n: int, tenant: str) -> float:
    from bench.stock import noop

    t = time.perf_counter()
    for _ in range(n):
        noop.apply_async(kwargs={"tenant_id": tenant, "job_id": str(uuid.uuid4())})
    return time.perf_counter() - t


def bare(n: int, tenant: str) -> float:
    from bench.bare import noop

    t = time.perf_counter()
    for _ in range(n):
        noop.apply_async(kwargs={"tenant_id": tenant, "job_id": str(uuid.uuid4())})
    return time.perf_counter() - t


def dispatch(n: int, tenant: str) -> float:
    from app.tasks.dispatch import dispatch_intent

    t = time.perf_counter()
    for i in range(n):
        dispatch_intent.delay(tenant_id=tenant, intent_key=ECHO, intent_params={"i": i})
    return time.perf_counter() - t


def submit_each(n: int, tenant: str) -> float:
    from app.intake.submit import submit
    from app.store import db

    t = time.perf_counter()
    with db.session() as session:
        for i in range(n):
            submit(session, tenant_id=tenant, intent_key=ECHO, intent_params={"i": i})
            session.commit()
    return time.perf_counter() - t


def submit_in_transaction(n: int, tenant: str, per_commit: int = 100) -> float:
    from app.intake.submit import submit
    from app.store import db

    t = time.perf_counter()
    with db.session() as session:
        for i in range(n):
            submit(session, tenant_id=tenant, intent_key=ECHO, intent_params={"i": i})
            if (i + 1) % per_commit == 0:
                session.commit()
        session.commit()
    return time.perf_counter() - t


def submit_many_bulk(n: int, tenant: str, per_call: int = 1000) -> float:
    from app.core.validation import Request
    from app.intake.submit import submit_many
    from app.store import db

    t = time.perf_counter()
    with db.session() as session:
        for start in range(0, n, per_call):
            submit_many(session, [Request(tenant, ECHO, {"i": i})
                                  for i in range(start, min(n, start + per_call))])
            session.commit()
    return time.perf_counter() - t


STOCK, BARE = "stock apply_async", "bare apply_async"
WAYS = {
    STOCK: stock,
    BARE: bare,
    "dispatch_intent.delay": dispatch,
    "submit, commit each": submit_each,
    "submit, 100 per transaction": submit_in_transaction,
    "submit_many, 1000 per call": submit_many_bulk,
}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench publish", description=__doc__)
    parser.add_argument("--calls", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=3, help="best of this many rounds")
    args = parser.parse_args(argv)
    tenant = make_tenant()
    for way in WAYS.values():  # warm up connections and imports
        way(50, tenant)
    results = []
    for name, way in WAYS.items():
        best = min(way(args.calls, tenant) for _ in range(args.rounds))
        reset_jobs()
        results.append({"way": name, "calls": args.calls, "seconds": round(best, 3),
                        "per_s": round(args.calls / best, 1)})
        print(f"{name:>30}: {args.calls / best:>9,.0f} jobs/s", flush=True)
    by_way = {r["way"]: r["per_s"] for r in results}
    for r in results:
        r["ratio_vs_stock"] = round(r["per_s"] / by_way[STOCK], 3)
        r["ratio_vs_bare"] = round(r["per_s"] / by_way[BARE], 3)
    print_table(f"Publish rate from one process ({args.calls:,} jobs, best of {args.rounds})",
                ["way", "jobs/s", "× stock apply_async", "× bare apply_async"],
                [(r["way"], r["per_s"], r["ratio_vs_stock"], r["ratio_vs_bare"])
                 for r in results])
    print(f"written {write_result('publish', {'runs': results})}")


if __name__ == "__main__":
    main()
