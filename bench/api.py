"""The HTTP API's cost: ``POST /v1/jobs`` requests per second from concurrent clients against a
real ``jobq api`` process, beside ``submit`` committing each job in one process (the same run,
the same database and broker); then the latency of ``POST /v1/jobs`` at a steady 50 requests a
second (open loop: each request leaves at its scheduled time).

    python -m bench api [--requests 3000] [--clients 8] [--rate 50] [--seconds 20] [--workers 1]

No worker runs: as in ``bench publish``, the jobs are written and handed to Redis only.
"""

from __future__ import annotations

import argparse
import http.client
import json
import queue
import sys
import threading
import time

from bench import env  # noqa: F401  (first: sets up the environment)
from bench.common import (
    make_tenant,
    percentile,
    print_table,
    reset_jobs,
    start_process,
    write_result,
)

ECHO = "system.exec.echo"


def _free_port() -> int:
    from app.ops.embedded import free_port

    return free_port()


def start_api(port: int, workers: int):
    from app.ops.embedded import _listening

    proc = start_process("api", [sys.executable, "-m", "app.ops.cli", "api", "--port", str(port),
                                 "--workers", str(workers), "--no-access-log"],
                         {"LOG_LEVEL": "WARNING"})
    deadline = time.monotonic() + 30
    while not _listening(port):
        if proc.popen.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"jobq api did not start: {proc.log.read_text()[-2000:]}")
        time.sleep(0.1)
    return proc


class Client:
    """One keep-alive connection, as an academy's web server holds one."""

    def __init__(self, port: int, key: str):
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        self.headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}

    def post_job(self, i: int) -> int:
        body = json.dumps({"intent_key": ECHO, "intent_params": {"i": i}})
        self.conn.request("POST", "/v1/jobs", body=body, headers=self.headers)
        response = self.conn.getresponse()
        response.read()
        return response.status


def throughput(port: int, key: str, total: int, clients: int) -> tuple[float, int]:
    """Seconds for ``total`` requests from ``clients`` concurrent connections; errors."""
    counter = iter(range(total))
    lock = threading.Lock()
    errors = [0]

    def run() -> None:
        client = Client(port, key)
        while True:
            with lock:
                i = next(counter, None)
            if i is None:
                return
            if client.post_job(i) != 201:
                with lock:
                    errors[0] += 1

    threads = [threading.Thread(target=run) for _ in range(clients)]
    t = time.perf_counter()
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    return time.perf_counter() - t, errors[0]


def submit_each(total: int, tenant: str) -> float:
    from app.intake.submit import submit
    from app.store import db

    t = time.perf_counter()
    with db.session() as session:
        for i in range(total):
            submit(session, tenant_id=tenant, intent_key=ECHO, intent_params={"i": i})
            session.commit()
    return time.perf_counter() - t


def latency(port: int, key: str, rate: float, seconds: float, senders: int = 8
            ) -> tuple[list[float], int]:
    """Latencies (ms) of requests sent at ``rate`` a second for ``seconds``: each leaves at its
    slot (open loop), from whichever sender is free."""
    slots: queue.Queue[float | None] = queue.Queue()
    start = time.perf_counter() + 0.5
    n = int(rate * seconds)
    for i in range(n):
        slots.put(start + i / rate)
    for _ in range(senders):
        slots.put(None)
    found: list[float] = []
    late = [0]
    lock = threading.Lock()

    def run() -> None:
        client = Client(port, key)
        while (slot := slots.get()) is not None:
            wait = slot - time.perf_counter()
            if wait > 0:
                time.sleep(wait)
            elif wait < -0.005:
                with lock:
                    late[0] += 1
            t = time.perf_counter()
            status = client.post_job(0)
            took = (time.perf_counter() - t) * 1000
            with lock:
                found.append(took if status == 201 else float("inf"))

    threads = [threading.Thread(target=run) for _ in range(senders)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    return found, late[0]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench api", description=__doc__)
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--rate", type=float, default=50.0)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--workers", type=int, default=1, help="jobq api processes")
    args = parser.parse_args(argv)

    from app.api.keys import create

    tenant = make_tenant()
    # A rate far above what is measured: the limit's Redis round trip is paid, never hit.
    key = create(tenant_id=tenant, name="bench", scopes=["jobs:write"], by="bench",
                 rate_limit=1_000_000).secret
    port = _free_port()
    api = start_api(port, args.workers)
    try:
        throughput(port, key, 200, args.clients)  # warm up connections and imports
        submit_each(200, tenant)
        reset_jobs()
        api_s, errors = throughput(port, key, args.requests, args.clients)
        reset_jobs()
        submit_s = submit_each(args.requests, tenant)
        reset_jobs()
        lat, late = latency(port, key, args.rate, args.seconds)
        reset_jobs()
    finally:
        api.stop()
    api_rate, submit_rate = args.requests / api_s, args.requests / submit_s
    p50, p99 = percentile(lat, 50), percentile(lat, 99)
    rows = [
        ("POST /v1/jobs", f"{args.clients} clients", api_rate, api_rate / submit_rate),
        ("submit, commit each", "1 process", submit_rate, 1.0),
    ]
    print_table(f"Jobs asked for per second ({args.requests:,} each, jobq api with "
                f"{args.workers} process(es))", ["way", "callers", "jobs/s", "× submit"], rows)
    print_table(f"POST /v1/jobs at {args.rate:g} requests/s for {args.seconds:g} s",
                ["requests", "p50 ms", "p99 ms", "max ms", "late sends"],
                [(len(lat), p50, p99, max(lat), late)])
    if errors:
        print(f"{errors} request(s) of the throughput run did not answer 201")
    print(f"written {write_result('api', {'requests': args.requests, 'clients': args.clients, 'api_workers': args.workers, 'api_per_s': round(api_rate, 1), 'submit_per_s': round(submit_rate, 1), 'ratio_vs_submit': round(api_rate / submit_rate, 3), 'errors': errors, 'latency_rate': args.rate, 'latency_seconds': args.seconds, 'p50_ms': round(p50, 2), 'p99_ms': round(p99, 2), 'max_ms': round(max(lat), 2), 'late_sends': late})}")


if __name__ == "__main__":
    main()
