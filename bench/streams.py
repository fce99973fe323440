"""What open event streams cost: N streams of one key (``GET /v1/jobs/{id}/events``, each on
its own job awaiting approval, so none ends by itself) against a real ``jobq api`` process, and
what the database then does (transactions per second of the benchmark's own database, from
``pg_stat_database``) and how ``GET /v1/jobs`` answers beside them, against no streams at all;
then how soon a watched job's change reaches its stream (cancel it, time its ``end`` frame).

    python -m bench streams [--streams 200,1000] [--seconds 10] [--requests 200]

No worker runs: nothing else writes to the database while it is measured.
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import os
import threading
import time

from bench import env  # first: sets up the environment
from bench.api import _free_port
from bench.common import make_tenant, percentile, print_table, start_process, write_result

SLEEP = "system.exec.sleep"
SETTLE_SECONDS = 11.0
#: The API process's caps and lifetime for the benchmark: no cap in the way, no stream ending.
API_ENV = {"JOBQ_API_STREAMS_PER_KEY": "0", "JOBQ_API_STREAMS_PER_TENANT": "0",
           "JOBQ_API_STREAM_MAX_SECONDS": "86400", "LOG_LEVEL": "WARNING"}


def start_api(port: int):
    import sys

    from app.ops.embedded import _listening

    proc = start_process("api", [sys.executable, "-m", "app.ops.cli", "api", "--port", str(port),
                                 "--no-access-log"], API_ENV)
    deadline = time.monotonic() + 30
    while not _listening(port):
        if proc.popen.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"jobq api did not start: {proc.log.read_text()[-2000:]}")
        time.sleep(0.1)
    return proc


def transactions() -> int:
    """Commits and rollbacks of the benchmark's database so far (read from another database,
    so reading it adds none)."""
    import psycopg2

    conn = psycopg2.connect(env.ADMIN_URL)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT xact_commit + xact_rollback FROM pg_stat_database "
                        "WHERE datname = %s", (env.DB_NAME,))
            return int(cur.fetchone()[0])
    finally:
        conn.close()


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measure(api_pid: int, port: int, key: str, seconds: float, requests: int
            ) -> dict[str, float]:
    """Transactions per second over ``seconds`` (the API's CPU over the same time), then the
    latency of ``requests`` sequential ``GET /v1/jobs`` on one keep-alive connection."""
    # A backend publishes its counts at most once a second while busy, and up to 10 s after it
    # went idle: what opening the streams cost must not land in the window.
    time.sleep(SETTLE_SECONDS)
    before, cpu_before, t = transactions(), cpu_seconds(api_pid), time.monotonic()
    time.sleep(seconds)
    time.sleep(1.5)
    elapsed = time.monotonic() - t
    tx = (transactions() - before) / elapsed
    cpu = (cpu_seconds(api_pid) - cpu_before) / elapsed * 100
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    headers = {"Authorization": f"Bearer {key}"}
    took = []
    for _ in range(requests):
        t0 = time.perf_counter()
        conn.request("GET", "/v1/jobs?limit=50", headers=headers)
        response = conn.getresponse()
        response.read()
        took.append((time.perf_counter() - t0) * 1000)
        if response.status != 200:
            raise SystemExit(f"GET /v1/jobs answered {response.status}")
    conn.close()
    return {"tx_per_s": tx, "api_cpu_pct": cpu, "p50_ms": percentile(took, 50),
            "p99_ms": percentile(took, 99)}


class Streams:
    """Event streams held open from an asyncio loop of their own, on a thread."""

    def __init__(self, port: int, key: str):
        self.port, self.key = port, key
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.tasks: list[asyncio.Future] = []
        self.opened = 0
        self.refused: list[str] = []
        #: job id -> monotonic time its stream saw ``end`` (or a closing event).
        self.ended: dict[str, float] = {}

    async def _follow(self, job_id: str) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
        try:
            writer.write(f"GET /v1/jobs/{job_id}/events HTTP/1.1\r\nHost: bench\r\n"
                         f"Authorization: Bearer {self.key}\r\n\r\n".encode())
            status = (await reader.readline()).decode()
            if " 200 " not in status:
                self.refused.append(status.strip())
                return
            counted = False
            while line := await reader.readline():
                if line.startswith(b"event: state") and not counted:
                    self.opened += 1
                    counted = True
                elif line.startswith(b"event: end") or line.startswith(b"event: close"):
                    self.ended[job_id] = time.monotonic()
        finally:
            writer.close()

    def open(self, job_ids: list[str], timeout: float = 600) -> None:
        self.opened = 0
        for job_id in job_ids:
            self.tasks.append(asyncio.run_coroutine_threadsafe(self._follow(job_id), self.loop))
        deadline = time.monotonic() + timeout
        while self.opened < len(job_ids):
            if self.refused:
                raise SystemExit(f"streams refused: {self.refused[:3]}")
            if time.monotonic() > deadline:
                raise SystemExit(f"only {self.opened} of {len(job_ids)} streams opened")
            time.sleep(0.1)

    def close(self) -> None:
        for task in self.tasks:
            task.cancel()
        self.tasks.clear()
        time.sleep(2)  # the server notices the disconnects


def change_latency(streams: Streams, port: int, key: str, job_ids: list[str]) -> list[float]:
    """Milliseconds from a cancel's request to its stream's ``end`` frame, one job at a time."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    found = []
    for job_id in job_ids:
        t = time.monotonic()
        conn.request("POST", f"/v1/jobs/{job_id}/cancel", body="{}", headers=headers)
        response = conn.getresponse()
        response.read()
        if response.status != 200:
            raise SystemExit(f"cancel answered {response.status}")
        deadline = t + 30
        while job_id not in streams.ended and time.monotonic() < deadline:
            time.sleep(0.002)
        found.append((streams.ended.get(job_id, float("inf")) - t) * 1000)
    conn.close()
    return found


def make_jobs(tenant: str, n: int) -> list[str]:
    from app.intake.submit import submit
    from app.store import db

    with db.session() as session:
        ids = [submit(session, tenant_id=tenant, intent_key=SLEEP, intent_params={"seconds": 1},
                      requires_approval=True) for _ in range(n)]
        session.commit()
    return ids


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench streams", description=__doc__)
    parser.add_argument("--streams", default="200,1000",
                        help="comma-separated numbers of open streams to measure")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--changes", type=int, default=20, help="jobs cancelled to time delivery")
    parser.add_argument("--label", default="", help="kept in the result file (e.g. before)")
    args = parser.parse_args(argv)
    counts = [int(n) for n in args.streams.split(",") if n.strip()]

    from app.api.keys import create

    tenant = make_tenant()
    key = create(tenant_id=tenant, name="bench", scopes=["jobs:read", "jobs:write"], by="bench",
                 rate_limit=0).secret
    if min(counts) <= args.changes:
        parser.error(f"--streams must each exceed --changes ({args.changes})")
    jobs = make_jobs(tenant, sum(counts))
    port = _free_port()
    api = start_api(port)
    rows, result = [], {"label": args.label, "seconds": args.seconds,
                        "requests": args.requests, "runs": []}
    try:
        measure(api.popen.pid, port, key, 1, 20)  # warm up
        idle = measure(api.popen.pid, port, key, args.seconds, args.requests)
        rows.append(("0", idle["tx_per_s"], idle["api_cpu_pct"], idle["p50_ms"], idle["p99_ms"],
                     "", ""))
        print(f"no streams: {idle}", flush=True)
        result["runs"].append({"streams": 0, **idle})
        used = 0
        for n in counts:
            streams = Streams(port, key)
            # Of the n streams, ``changes`` are on jobs cancelled after the measurement.
            watched = jobs[used:used + n - args.changes]
            to_cancel = jobs[used + n - args.changes:used + n]
            used += n
            t = time.monotonic()
            streams.open(watched + to_cancel)
            opened_s = time.monotonic() - t
            print(f"{n} streams open after {opened_s:.1f} s", flush=True)
            found = measure(api.popen.pid, port, key, args.seconds, args.requests)
            lat = change_latency(streams, port, key, to_cancel)
            streams.close()
            shown = n
            rows.append((f"{shown:,}", found["tx_per_s"], found["api_cpu_pct"], found["p50_ms"],
                         found["p99_ms"], percentile(lat, 50), max(lat)))
            result["runs"].append({"streams": shown, "open_seconds": round(opened_s, 2),
                                   **found, "change_p50_ms": percentile(lat, 50),
                                   "change_max_ms": max(lat)})
            print(f"{shown} streams: {result['runs'][-1]}", flush=True)
    finally:
        api.stop()
    print_table(f"Open event streams of one key: the database's transactions/s over "
                f"{args.seconds:g} s, GET /v1/jobs beside them ({args.requests} sequential)",
                ["streams", "tx/s", "api CPU %", "GET p50 ms", "GET p99 ms",
                 "change→frame p50 ms", "max ms"], rows)
    name = f"streams-{args.label}" if args.label else "streams"
    print(f"written {write_result(name, json.loads(json.dumps(result)))}")


if __name__ == "__main__":
    main()
