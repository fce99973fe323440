"""The web console's pages on a big table: how long `jobq api`'s /ui pages take to answer, over
real HTTP, with N finished jobs (and their events) over many academies plus a backlog.

The table is filled as ``bench scale`` fills it (the same statements: finished jobs with their
three events over ``--tenants`` academies and ``--days`` days, then ``--pending`` pending jobs
and some awaiting approval), then one ``jobq api`` process answers, and each page is asked for
``--reps`` times in turn, logged in as an operator (every academy) and as one academy:

- Jobs: newest first (all academies; one academy by name), filtered by status, by intent, by
  academy and status, the second page (its cursor), a search by id prefix;
- Job: a finished job's page (row, events, children, no wait reasons), a pending one's (its
  wait reasons on the feeder's indexes);
- Approvals; and the academy's own Jobs and Job pages (under its row-level security).

    python -m bench console [--size 1000000] [--tenants 1000] [--pending 10000] [--reps 40]

``BENCH_REUSE_DB=<a kept database>`` measures a database kept by ``bench scale --keep`` (or by
this one with ``--keep``) without filling it again. Results: bench/results/console.json.
"""

from __future__ import annotations

import argparse
import re
import time
from typing import Any

from bench import env  # first: sets up the environment
from bench.api import _free_port, start_api
from bench.common import percentile, print_table, stop_all, targets, write_result
from bench.scale import add_pending, fill, raw, sample_ids, setup, sql

APPROVALS = 200


def login(url: str, credential: str):
    import httpx

    client = httpx.Client(base_url=url, timeout=60)
    answer = client.post("/ui/login", data={"credential": credential},
                         headers={"Origin": url})
    if answer.status_code != 303:
        raise SystemExit(f"console login refused: {answer.status_code} {answer.text[:300]}")
    return client


def timed_get(client, path: str, reps: int, **params: Any) -> list[float]:
    out = []
    for _ in range(reps):
        t0 = time.perf_counter()
        answer = client.get(path, params=params)
        out.append((time.perf_counter() - t0) * 1000)
        if answer.status_code != 200:
            raise SystemExit(f"{path} {params}: {answer.status_code} {answer.text[:300]}")
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench console", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=1_000_000, help="finished jobs")
    parser.add_argument("--tenants", type=int, default=1000)
    parser.add_argument("--days", type=float, default=30.0)
    parser.add_argument("--pending", type=int, default=10_000)
    parser.add_argument("--reps", type=int, default=40, help="requests per page")
    parser.add_argument("--keep", action="store_true", help="keep the database")
    args = parser.parse_args(argv)
    if args.keep:
        env.keep()

    from app.api.keys import create

    setup(args.tenants)
    [(have,)] = sql("SELECT count(*) FROM job_executions WHERE status IN "
                    "('completed', 'failed')") if env.REUSE_DB else [(0,)]
    if have < args.size:
        t0 = time.monotonic()
        fill(have, args.size, tenants=args.tenants, days=args.days)
        add_pending(args.pending, args.tenants, "realtime")
        sql("UPDATE job_executions SET status = 'awaiting_approval', "
            "approval_expires_at = now() + interval '3 days' WHERE id IN (SELECT id FROM "
            "job_executions WHERE status = 'pending' ORDER BY created_at LIMIT :n)",
            n=APPROVALS)
        raw("VACUUM ANALYZE job_executions")
        raw("VACUUM ANALYZE job_events")
        print(f"filled in {time.monotonic() - t0:.0f} s", flush=True)
    [(total,)] = sql("SELECT count(*) FROM job_executions")
    [(academy_id, academy)] = sql("SELECT t.id::text, t.name FROM bench_tenants bt "
                                  "JOIN tenants t ON t.id = bt.id WHERE bt.n = 7")
    finished = sample_ids(5, total)
    [(pending,)] = sql("SELECT id::text FROM job_executions WHERE status = 'pending' "
                       "AND tenant_id = CAST(:t AS uuid) ORDER BY created_at DESC LIMIT 1",
                       t=academy_id)
    [(own_finished,)] = sql("SELECT id::text FROM job_executions WHERE tenant_id = "
                            "CAST(:t AS uuid) AND status = 'completed' LIMIT 1", t=academy_id)
    operator_key = create(tenant_id=None, name="bench-console", scopes=["jobs:read"],
                          by="bench").secret
    academy_key = create(tenant_id=academy_id, name="bench-console", scopes=["jobs:read"],
                         by="bench").secret

    port = _free_port()
    api = start_api(port, 1)
    try:
        url = f"http://127.0.0.1:{port}"
        operator, own = login(url, operator_key), login(url, academy_key)
        first = operator.get("/ui/jobs").text
        cursor = re.search(r'href="/ui/jobs\?cursor=([^"&]+)"', first)
        reps = args.reps
        pages: dict[str, list[float]] = {}
        for _ in range(2):  # warm: the first requests load the code and fill caches
            operator.get("/ui/jobs")
            own.get("/ui/jobs")
        pages["jobs, all academies"] = timed_get(operator, "/ui/jobs", reps)
        pages["jobs, one academy by name"] = timed_get(operator, "/ui/jobs", reps,
                                                       academy=academy)
        pages["jobs, status failed"] = timed_get(operator, "/ui/jobs", reps, status="failed")
        pages["jobs, one intent"] = timed_get(operator, "/ui/jobs", reps,
                                              intent="system.exec.echo")
        pages["jobs, academy + failed"] = timed_get(operator, "/ui/jobs", reps,
                                                    academy=academy, status="failed")
        pages["jobs, second page"] = timed_get(operator, "/ui/jobs", reps,
                                               cursor=cursor.group(1) if cursor else "")
        pages["jobs, id prefix search"] = timed_get(operator, "/ui/jobs", reps,
                                                    q=finished[0][:8])
        pages["job, finished"] = [t for job_id in finished
                                  for t in timed_get(operator, f"/ui/jobs/{job_id}",
                                                     max(1, reps // len(finished)))]
        pages["job, pending (why waiting)"] = timed_get(operator, f"/ui/jobs/{pending}", reps)
        pages["approvals"] = timed_get(operator, "/ui/approvals", reps)
        pages["academy: its jobs"] = timed_get(own, "/ui/jobs", reps)
        pages["academy: a job"] = timed_get(own, f"/ui/jobs/{own_finished}", reps)
    finally:
        stop_all([api])
    rows = [(name, f"{percentile(ms, 50):.1f}", f"{percentile(ms, 95):.1f}", f"{max(ms):.1f}")
            for name, ms in pages.items()]
    print_table(f"Console pages over HTTP with {total:,} jobs ({args.tenants:,} academies), "
                f"ms, {reps} requests each", ["page", "p50", "p95", "max"], rows)
    worst = max(percentile(ms, 95) for ms in pages.values())
    found = targets([(f"console page p95, worst page, {total:,} jobs", worst, "< 100 ms")])
    path = write_result("console", {
        "size": total, "tenants": args.tenants, "reps": reps,
        "pages": {name: {"p50": percentile(ms, 50), "p95": percentile(ms, 95), "max": max(ms)}
                  for name, ms in pages.items()},
        "targets": found})
    print(f"wrote {path}")
