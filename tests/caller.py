"""A caller of jobq in a process of its own, for tests whose services are private:
``python -m tests.caller submit|dispatch --tenant T --batch N < jobs.json`` (a JSON list of
``{"intent_key": ..., "intent_params": ...}``) prints ``{"ids": [...], "seconds": [...]}``.

jobq reads its settings once per process, so a test process bound to the shared services
calls the private ones through this, started with their environment.
"""

from __future__ import annotations

import argparse
import json
import sys
import time


def submit(tenant: str, jobs: list[dict], batch: int) -> dict:
    """Each batch in one transaction of the caller's own; published after it commits."""
    from app.core.validation import Request
    from app.intake.submit import submit_many
    from app.store import db

    ids: list[str] = []
    seconds: list[float] = []
    for start in range(0, len(jobs), batch):
        began = time.perf_counter()
        with db.session() as session:
            ids += submit_many(session, [Request(tenant, j["intent_key"], j.get("intent_params"))
                                         for j in jobs[start:start + batch]])
            session.commit()
        seconds.append(round(time.perf_counter() - began, 3))
    return {"ids": ids, "seconds": seconds}


def dispatch(tenant: str, jobs: list[dict], batch: int) -> dict:
    """``dispatch_intent`` messages only: this process never touches the database."""
    from app.broker.celery_app import celery_app
    from app.core.validation import job_id_for
    from app.tasks.dispatch import dispatch_intent

    ids: list[str] = []
    seconds: list[float] = []
    for start in range(0, len(jobs), batch):
        began = time.perf_counter()
        with celery_app.producer_or_acquire() as producer:
            for j in jobs[start:start + batch]:
                sent = dispatch_intent.apply_async(
                    kwargs={"tenant_id": tenant, "intent_key": j["intent_key"],
                            "intent_params": j.get("intent_params")},
                    producer=producer)
                ids.append(job_id_for(sent.id))
        seconds.append(round(time.perf_counter() - began, 3))
    return {"ids": ids, "seconds": seconds}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.caller", description=__doc__)
    parser.add_argument("how", choices=("submit", "dispatch"))
    parser.add_argument("--tenant", required=True)
    parser.add_argument("--batch", type=int, default=100)
    args = parser.parse_args(argv)
    jobs = json.load(sys.stdin)
    out = (submit if args.how == "submit" else dispatch)(args.tenant, jobs, args.batch)
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()
