"""Sweep latency and lost-run recovery time, with the default timings (sweep every 1 s, lease
30 s, recovery every 5 s) and the worker set-up of ``jobq run``:

- plain-SQL insert -> ``processing``: rows inserted one at a time at random moments, so they
  land at every phase of the sweep's tick; median, p90 and worst of ``executed_at - created_at``;
- a prefork child killed with SIGKILL mid-run -> its next attempt started (the redelivered
  message takes the run over from the dead pid);
- a whole worker killed -> next attempt started on another worker (its liveness lock is free, recovery
  puts the job back, the sweep publishes it).

    python -m bench.sweep_latency [--rows 40] [--child-kills 3] [--worker-kills 2]
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import subprocess
import sys
import time

from bench import env  # noqa: F401  (first: sets up the environment)
from bench.common import (
    Proc,
    celery_beat,
    celery_worker,
    make_tenant,
    median,
    percentile,
    print_table,
    stop_all,
    write_result,
)

#: The queues ``jobq run``'s realtime worker serves (maintenance included: it runs the sweep).
QUEUES = "celery,dispatch,realtime,maintenance"
#: Long enough to be killed mid-run, short enough for the retried attempt to finish.
SLEEP_SECONDS = 20


def sql(statement: str, **params):
    from sqlalchemy import text

    from app.store import db

    with db.engine().begin() as conn:
        result = conn.execute(text(statement), params)
        return result.all() if result.returns_rows else []


def start_worker(name: str, *args: str) -> Proc:
    from app.broker.celery_app import celery_app

    proc = celery_worker("app", name, *args, "-Q", QUEUES)
    deadline = time.monotonic() + 60
    while not celery_app.control.ping(destination=[proc.name], timeout=0.5):
        if proc.popen.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"worker {proc.name} did not start; see {proc.log}")
    return proc


def children(pid: int) -> set[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True)
    return {int(p) for p in out.stdout.split()}


def wait_until(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise SystemExit(f"timed out after {timeout:.0f}s waiting for {what}")


def insert_latency(tenant: str, rows: int) -> list[float]:
    """Seconds from each plain-SQL insert to its ``processing`` (both on the database clock)."""
    ids = []
    for _ in range(rows):
        ids.append(sql("INSERT INTO job_executions (tenant_id, intent_key) "
                       "VALUES (:t, 'system.exec.echo') RETURNING id::text", t=tenant)[0][0])
        time.sleep(random.uniform(0.3, 1.7))  # a random phase of the sweep's 1 s tick

    def all_started():
        return sql("SELECT count(*) FROM job_executions WHERE id::text = ANY(:ids) "
                   "AND executed_at IS NOT NULL", ids=ids)[0][0] == len(ids)

    wait_until(all_started, 60, "every inserted row to start")
    return [float(r[0]) for r in sql(
        "SELECT extract(epoch FROM executed_at - created_at) FROM job_executions "
        "WHERE id::text = ANY(:ids)", ids=ids)]


def killed_run_recovery(tenant: str, kill_whole_worker: bool, workers: list[Proc]) -> float:
    """Seconds from SIGKILL to the job's next attempt starting."""
    job = sql("INSERT INTO job_executions (tenant_id, intent_key, intent_params) "
              "VALUES (:t, 'system.exec.sleep', jsonb_build_object('seconds', :s)) "
              "RETURNING id::text", t=tenant, s=SLEEP_SECONDS)[0][0]
    owner = wait_until(lambda: sql("SELECT lease_owner FROM job_executions WHERE id = "
                                   "CAST(:j AS uuid) AND status = 'processing'", j=job),
                       30, "the job to start")[0][0]
    pid = int(owner.split(":")[1])  # host:pid:token
    time.sleep(1.0)  # well into the run
    if kill_whole_worker:
        victim = next(w for w in workers if pid in children(w.popen.pid))
        os.killpg(victim.popen.pid, signal.SIGKILL)
    else:
        os.kill(pid, signal.SIGKILL)
    killed_at = sql("SELECT clock_timestamp()")[0][0]
    started = wait_until(
        lambda: sql("SELECT at FROM job_events WHERE job_id = CAST(:j AS uuid) "
                    "AND kind = 'started' AND attempt = 2", j=job),
        120, "the next attempt to start")[0][0]
    if kill_whole_worker:
        victim.popen.wait(10)
        workers[workers.index(victim)] = start_worker("replacement", "-P", "prefork", "-c", "1")
    wait_until(lambda: sql("SELECT status FROM job_executions WHERE id = CAST(:j AS uuid) "
                           "AND status = 'completed'", j=job), SLEEP_SECONDS + 60,
               "the retried job to complete")
    return (started - killed_at).total_seconds()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.sweep_latency", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=40, help="plain-SQL rows to time")
    parser.add_argument("--child-kills", type=int, default=3)
    parser.add_argument("--worker-kills", type=int, default=2)
    args = parser.parse_args(argv)

    from app.core.settings import settings

    timings = {"sweep_interval_s": settings.sweep_interval, "lease_s": settings.lease_seconds,
               "recover_interval_s": settings.recover_interval}
    print(f"timings: {timings}", flush=True)
    tenant = make_tenant()
    procs: list[Proc] = [celery_beat()]
    try:
        workers = [start_worker("prefork2", "-P", "prefork", "-c", "2")]
        procs += workers
        delays = insert_latency(tenant, args.rows)
        print(f"insert -> processing: median {median(delays):.3f}s, worst {max(delays):.3f}s",
              flush=True)
        child = [killed_run_recovery(tenant, False, workers) for _ in range(args.child_kills)]
        print(f"child killed -> next attempt: {[round(s, 2) for s in child]}", flush=True)
        # Whole-worker kills: two single-process workers, so the other one takes the job over.
        stop_all(workers)
        workers[:] = [start_worker(f"solo{i}", "-P", "prefork", "-c", "1") for i in range(2)]
        whole = [killed_run_recovery(tenant, True, workers) for _ in range(args.worker_kills)]
        print(f"worker killed -> next attempt: {[round(s, 2) for s in whole]}", flush=True)
    finally:
        stop_all(procs + workers)

    rows = [("plain-SQL insert -> processing", len(delays), median(delays),
             percentile(delays, 90), min(delays), max(delays))]
    if child:
        rows.append(("prefork child killed -> attempt 2 started", len(child), median(child),
                     percentile(child, 90), min(child), max(child)))
    if whole:
        rows.append(("whole worker killed -> attempt 2 started", len(whole), median(whole),
                     percentile(whole, 90), min(whole), max(whole)))
    print_table("Sweep latency and lost-run recovery (seconds)",
                ["measure", "n", "median", "p90", "best", "worst"], rows)
    path = write_result("sweep_latency", {
        "timings": timings, "insert_to_processing_s": delays,
        "child_kill_to_next_attempt_s": child, "worker_kill_to_next_attempt_s": whole,
    })
    print(f"written {path}")


if __name__ == "__main__":
    main(sys.argv[1:])
