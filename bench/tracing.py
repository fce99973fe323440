"""Tracing's cost (docs/tracing.md): what a job pays for it with tracing off and on, and what
installing OpenTelemetry's SDK does to a process's start.

* per job, in a loop: the calls a job's trip makes into tracing (submit's span and the
  traceparent it stores, the run's wait and attempt spans, one outside call), with no endpoint
  and then exporting to an OTLP/HTTP receiver in this process (tests/otlp.py's);
* end to end: ``--jobs`` echo jobs asked for with ``submit_many`` and run by an in-thread worker,
  off then on, rounds interleaved: jobs per second, medians;
* start: ``import app.tasks`` in a fresh interpreter, best of ``--starts``, with the SDK
  installed and with it hidden (as where the tracing extra is not installed).

    python -m bench tracing [--calls 20000] [--jobs 300] [--rounds 3] [--starts 10]
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import os
import statistics
import subprocess
import sys
import time
import uuid

from app.core import tracing
from app.run import spans
from app.store.jobstore import Claimed
from bench import env  # noqa: F401  (first: sets up the environment)
from bench.common import make_tenant, print_table, write_result

IMPORT = "import time; t = time.perf_counter(); import app.tasks; print(time.perf_counter() - t)"
#: An OTLP/HTTP receiver (tests/otlp.py's): prints its URL, then, once its input closes, how
#: many spans it received.
RECEIVER = """
import sys
from tests.otlp import serve
receiver, server = serve()
print(receiver.url, flush=True)
sys.stdin.read()
print(len(receiver.spans), flush=True)
"""
#: As where the SDK is not installed: redis-py's optional import of it fails.
HIDDEN = "import sys; sys.modules['opentelemetry.sdk'] = None\n" + IMPORT


def one_job_of_calls(job: Claimed) -> None:
    """What a job's trip calls into tracing, in order (app.intake.submit, app.run.spans)."""
    with tracing.span("submit", attributes={"jobq.source": "submit"}) as asked:
        traceparent = tracing.current_traceparent()
        asked.set({"jobq.jobs": 1})
    if traceparent is not None:  # the claim reads it from the row
        job = dataclasses.replace(job, traceparent=traceparent)
    with spans.attempt(job, queue="realtime", worker="bench") as attempt:
        with spans.outside_call("kakao", "POST", url="http://gateway.invalid/messages") as call:
            call.answered(200)
        attempt.ended("completed")


def per_job_seconds(tenant: str, calls: int) -> float:
    now = dt.datetime.now(dt.UTC)
    job = Claimed(str(uuid.uuid4()), tenant, "system.exec.echo", {}, 1, 3, None, now,
                  due_at=now, started_at=now, tenant_name="벤치")
    started = time.perf_counter()
    for _ in range(calls):
        one_job_of_calls(job)
    return (time.perf_counter() - started) / calls


def drain(tenant: str, jobs: int) -> float:
    """Jobs per second: ``jobs`` echo jobs asked for at once, until the last one completed."""
    from sqlalchemy import text

    from app.core.validation import Request
    from app.intake.submit import submit_many
    from app.store import db

    started = time.perf_counter()
    with db.session() as session:
        ids = submit_many(session, [Request(tenant, "system.exec.echo", {"n": i})
                                    for i in range(jobs)])
        session.commit()
    while True:
        with db.engine().connect() as conn:
            done = conn.execute(text(
                "SELECT count(*) FROM job_executions WHERE id = ANY(CAST(:ids AS uuid[])) "
                "AND status = 'completed'"), {"ids": ids}).scalar_one()
        if done == jobs:
            return jobs / (time.perf_counter() - started)
        time.sleep(0.01)


def start_seconds(code: str) -> float:
    ran = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    return float(ran.stdout)


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench tracing", description=__doc__)
    parser.add_argument("--calls", type=int, default=20000)
    parser.add_argument("--jobs", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--starts", type=int, default=10)
    args = parser.parse_args(argv)

    from app.core import settings as app_settings
    from tests.fixtures import in_thread_worker
    from tests.otlp import reset_tracing

    # The receiver in a process of its own: its decoding is not this process's cost.
    receiver = subprocess.Popen([sys.executable, "-c", RECEIVER], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, text=True)
    assert receiver.stdout is not None and receiver.stdin is not None
    url = receiver.stdout.readline().strip()
    tenant = make_tenant()

    def switch(on: bool) -> None:
        reset_tracing()
        app_settings.reload({**os.environ, **(
            {"OTEL_EXPORTER_OTLP_ENDPOINT": url} if on else {})})
        assert (tracing.setup() is not None) == on

    per_job = {}
    for on in (False, True):
        switch(on)
        per_job_seconds(tenant, min(1000, args.calls))  # warm up
        per_job["on" if on else "off"] = per_job_seconds(tenant, args.calls)
    rates: dict[str, list[float]] = {"off": [], "on": []}
    with in_thread_worker(concurrency=2):
        for _ in range(args.rounds):
            for on in (False, True):
                switch(on)
                rates["on" if on else "off"].append(drain(tenant, args.jobs))
    tracing.flush(30)
    reset_tracing()
    spans_received = int(receiver.communicate("", timeout=60)[0].strip() or 0)
    starts = {"SDK installed": [], "SDK absent": []}
    for _ in range(args.starts):
        starts["SDK installed"].append(start_seconds(IMPORT))
        starts["SDK absent"].append(start_seconds(HIDDEN))

    print_table(f"Tracing's calls per job ({args.calls:,} jobs' worth)", ["tracing", "µs per job"],
                [(k, v * 1e6) for k, v in per_job.items()])
    print_table(f"{args.jobs} echo jobs, in-thread worker (threads, 2), {args.rounds} rounds",
                ["tracing", "jobs/s (median)", "each round"],
                [(k, statistics.median(v), ", ".join(f"{x:.0f}" for x in v))
                 for k, v in rates.items()])
    print_table(f"import app.tasks, {args.starts} fresh interpreters", ["", "best ms", "median ms"],
                [(k, min(v) * 1000, statistics.median(v) * 1000) for k, v in starts.items()])
    print(f"spans received by the OTLP receiver: {spans_received:,}")
    path = write_result("tracing", {
        "calls": args.calls, "jobs": args.jobs, "rounds": args.rounds,
        "per_job_us": {k: round(v * 1e6, 3) for k, v in per_job.items()},
        "jobs_per_second": rates, "import_app_tasks_s": starts,
        "spans_received": spans_received})
    print(f"written {path}")
