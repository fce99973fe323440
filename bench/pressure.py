"""PostgreSQL under pressure: jobq on a cluster of the benchmark's own (bench/pgcluster.py:
initdb into a temporary directory, autovacuum on, durable commits, its own port), a steady
offered load of echo jobs (plain-SQL inserts into their queue, as the original system writes
them), and for each scenario three phases: clean, pressure, recovery. Per phase: throughput
(jobs completed a second, and × the clean phase), pickup latency p50/p99 (insert to start, the
database's clock), dead tuples of the hot tables at its end; per scenario: seconds from the end
of the pressure until the completion rate is back to 90% of clean, until new jobs start
within twice the clean p99 again, and until ``job_executions``' dead tuples are back to the
clean level (sampled every 2 s), jobs lost (accepted, never completed once the load stopped
and the backlog drained) and run twice.

Scenarios (the public postgresql-job-queue-benchmarking harness's):

- ``idle_tx``: a session idle in a transaction that holds an XID (the xmin horizon);
- ``rr_readers``: 4 REPEATABLE READ sessions scanning the queue's tables, snapshots held;
- ``terminate``: ``pg_terminate_backend`` of one of jobq's connections, 2 a second;
- ``idle_conns``: 300 idle connections taken from the server (``--max-connections`` leaves
  jobq the rest);
- ``restart``: PostgreSQL stopped (fast) and started again;
- ``worker_kill``: a worker's process group SIGKILLed every 20 s and started again at once.

    python -m bench pressure [--scenarios idle_tx,terminate] [--phase-seconds 60]
                             [--pressure-seconds 600] [--rate 50] [--autovacuum off]
    python -m bench pressure --phase-seconds 20            # every scenario in about 20 min

Both systems by default (``--systems jobq,procrastinate``), one after the other on the same
cluster (bench/pressure_peer.py: Procrastinate in a database of its own, two worker processes
of one job at a time as jobq's two realtime ones; ``pip install -e '.[bench]'`` installs it).

Results: bench/results/pressure.json.
"""

from __future__ import annotations

import argparse
import atexit
import os
import threading
import time
from typing import Any

from bench.pgcluster import Cluster
from bench.pressure_parts import ECHO, Load, Pressure, connect
from bench.pressure_peer import System

SCENARIOS = ("idle_tx", "rr_readers", "terminate", "idle_conns", "restart", "worker_kill")
SYSTEMS = ("jobq", "procrastinate")
TENANTS = 20


def dead_tuples(url: str, tables: tuple[str, ...]) -> dict[str, int] | None:
    """The dead tuples of ``tables`` (the tables every job writes, which a held horizon lets
    pile up)."""
    try:
        conn = connect(url)
        cur = conn.cursor()
        cur.execute("SELECT relname, n_dead_tup FROM pg_stat_user_tables "
                    "WHERE relname = ANY(%s)", (list(tables),))
        out = dict(cur.fetchall())
        conn.close()
        return out
    except Exception:
        return None


#: Statements of a phase's profile: the most buffers a call.
TOP_STATEMENTS = 8


def statements(url: str) -> dict[str, tuple[int, float, int]] | None:
    """Every statement's totals so far: ``{query: (calls, ms, buffers)}`` (pg_stat_statements;
    buffers are shared blocks hit or read: what a call walks, whatever the machine's load)."""
    try:
        conn = connect(url)
        cur = conn.cursor()
        cur.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        cur.execute("SELECT query, sum(calls)::bigint, sum(total_exec_time), "
                    "sum(shared_blks_hit + shared_blks_read)::bigint "
                    "FROM pg_stat_statements WHERE dbid = (SELECT oid FROM pg_database "
                    "WHERE datname = current_database()) GROUP BY query")
        out = {q: (int(c), float(ms), int(b)) for q, c, ms, b in cur.fetchall()}
        conn.commit()
        conn.close()
        return out
    except Exception:
        return None


def profile(before: dict | None, after: dict | None) -> list[dict[str, Any]]:
    """The phase's statements with the most buffers a call (and at least one call a second's
    worth: the hot path, not a one-off), from two :func:`statements` snapshots."""
    if before is None or after is None:
        return []
    rows = []
    for query, (calls, ms, buffers) in after.items():
        c0, ms0, b0 = before.get(query, (0, 0.0, 0))
        n = calls - c0
        if n < 10:
            continue
        rows.append({"query": " ".join(query.split())[:160], "calls": n,
                     "buffers_per_call": round((buffers - b0) / n, 1),
                     "ms_per_call": round((ms - ms0) / n, 3)})
    rows.sort(key=lambda r: -r["buffers_per_call"] * r["calls"])
    return rows[:TOP_STATEMENTS]


class DeadSampler(threading.Thread):
    """The hot tables' dead tuples every ``every`` seconds: ``[(time, {table: n})]``."""

    def __init__(self, url: str, tables: tuple[str, ...], every: float = 2.0) -> None:
        super().__init__(daemon=True)
        self.url, self.tables, self.every = url, tables, every
        self.samples: list[tuple[float, dict[str, int]]] = []
        self.stop_event = threading.Event()

    def run(self) -> None:
        while not self.stop_event.wait(self.every):
            found = dead_tuples(self.url, self.tables)
            if found is not None:
                self.samples.append((time.time(), found))


def run_scenario(kind: str, args, system: System, cluster: Cluster, workers: Any
                 ) -> dict[str, Any]:
    url = system.url
    system.reset()
    load = Load(url, args.rate, system.offer)
    load.start()
    pressure = Pressure(kind, url, cluster, workers, args, system.hot_tables)
    sampler = DeadSampler(url, system.hot_tables)
    sampler.start()
    phases: dict[str, tuple[float, float]] = {}
    dead: dict[str, Any] = {}
    profiles: dict[str, list[dict[str, Any]]] = {}
    for phase, seconds in (("clean", args.phase_seconds), ("pressure", args.pressure_seconds),
                           ("recovery", args.phase_seconds)):
        t0 = time.time()
        before = statements(url)
        if phase == "pressure":
            pressure.begin()
        time.sleep(max(0.0, t0 + seconds - time.time()))
        profiles[phase] = profile(before, statements(url))  # (before the pressure ends)
        if phase == "pressure":
            pressure.end()
        phases[phase] = (t0, time.time())
        dead[phase] = dead_tuples(url, system.hot_tables)
        print(f"  {kind}: {phase} done ({load.accepted} accepted, {load.refused} refused)",
              flush=True)
    load.stop_event.set()
    load.join(10)
    sampler.stop_event.set()
    drained = drain(system, load.accepted, args.drain_timeout)
    out = summarize(kind, system, phases, dead, pressure, load, drained)
    out["system"] = system.name
    out["statements"] = profiles
    # Dead tuples of job_executions back to the clean phase's level (within 2×, or +1,000).
    jobs_table = system.hot_tables[0]
    clean = (dead["clean"] or {}).get(jobs_table, 0)
    released = pressure.released_at or phases["pressure"][1]
    out["dead_recover_s"] = next(
        (round(t - released, 1) for t, d in sampler.samples
         if t >= released and d.get(jobs_table, 0) <= max(2 * clean, clean + 1000)), None)
    out["dead_samples"] = [(round(t - phases["clean"][0], 1), d) for t, d in sampler.samples]
    return out


def drain(system: System, accepted: int, timeout: float) -> bool:
    """Wait until every accepted job has finished (or ``timeout``)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            conn = connect(system.url)
            cur = conn.cursor()
            cur.execute(system.done_sql)
            done = cur.fetchone()[0]
            conn.close()
            if done >= accepted:
                return True
        except Exception:
            pass
        time.sleep(1)
    return False


def summarize(kind, system: System, phases, dead, pressure, load, drained) -> dict[str, Any]:
    from bench.common import percentile

    conn = connect(system.url)
    cur = conn.cursor()
    cur.execute(system.jobs_sql)
    jobs = cur.fetchall()
    cur.execute(system.twice_sql)
    twice = cur.fetchone()[0]
    conn.close()
    out: dict[str, Any] = {"scenario": kind, "phases": {}, "notes": pressure.notes,
                           "accepted": load.accepted, "refused": load.refused,
                           "lost": sum(1 for j in jobs if not j[3]),
                           "ran_twice": twice, "drained": drained}
    for phase, (t0, t1) in phases.items():
        done = sum(1 for j in jobs if j[2] is not None and t0 <= float(j[2]) < t1)
        waits = [(float(j[1]) - float(j[0])) * 1000 for j in jobs
                 if j[1] is not None and t0 <= float(j[0]) < t1]
        out["phases"][phase] = {
            "seconds": round(t1 - t0, 1), "per_s": round(done / (t1 - t0), 1),
            "pickup_p50_ms": round(percentile(waits, 50), 1),
            "pickup_p99_ms": round(percentile(waits, 99), 1), "dead_tuples": dead[phase]}
        # jobq's pickup in two: insert -> handed to the broker (the feeder), then -> started.
        handed = [(float(j[4]) - float(j[0])) * 1000 for j in jobs
                  if j[4] is not None and j[1] is not None and t0 <= float(j[0]) < t1]
        if handed:
            out["phases"][phase]["handed_p50_ms"] = round(percentile(handed, 50), 1)
            out["phases"][phase]["handed_p99_ms"] = round(percentile(handed, 99), 1)
    start = phases["clean"][0]
    per_second: dict[int, int] = {}
    for j in jobs:
        if j[2] is not None:
            k = int(float(j[2]) - start)
            per_second[k] = per_second.get(k, 0) + 1
    #: Jobs completed in each second since the clean phase began (for a plot per phase).
    out["completed_per_second"] = [per_second.get(k, 0) for k in range(max(per_second) + 1)] \
        if per_second else []
    clean = out["phases"]["clean"]["per_s"]
    for p in out["phases"].values():
        p["x_clean"] = round(p["per_s"] / clean, 2) if clean else None
    # Recovered: the first second after the pressure was lifted from which 3 s complete at
    # least 90% of what the clean phase did in 3 s.
    t_end = pressure.released_at or phases["pressure"][1]
    ends = sorted(float(j[2]) for j in jobs if j[2] is not None and float(j[2]) >= t_end)
    out["recover_s"] = None
    for s in range(int(phases["recovery"][1] - t_end)):
        window = sum(1 for c in ends if t_end + s <= c < t_end + s + 3)
        if clean and window >= 0.9 * clean * 3:
            out["recover_s"] = s
            break
    # And the latency: the first second from which the jobs inserted within 3 s start no later
    # than twice the clean phase's p99 (a backlog drains fast; its newest jobs wait behind it).
    bound = 2 * out["phases"]["clean"]["pickup_p99_ms"]
    out["latency_recover_s"] = None
    for s in range(int(phases["recovery"][1] - t_end)):
        waits = [(float(j[1]) - float(j[0])) * 1000 for j in jobs
                 if j[1] is not None and t_end + s <= float(j[0]) < t_end + s + 3]
        if waits and percentile(waits, 99) <= bound:
            out["latency_recover_s"] = s
            break
    return out


def echo_queue() -> str:
    from app.core.registry import manifest

    intent = manifest.get(ECHO)
    assert intent is not None, f"{ECHO} is not in the manifest"
    return intent.queue


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench pressure", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scenarios", default=",".join(SCENARIOS))
    parser.add_argument("--systems", default=",".join(SYSTEMS),
                        help="jobq, procrastinate or both (one after the other)")
    parser.add_argument("--phase-seconds", type=float, default=60,
                        help="length of the clean and the recovery phase")
    parser.add_argument("--pressure-seconds", type=float, default=None,
                        help="length of the pressure phase (default: --phase-seconds)")
    parser.add_argument("--rate", type=float, default=50, help="jobs offered a second")
    parser.add_argument("--autovacuum", choices=("on", "off"), default="on")
    parser.add_argument("--max-connections", type=int, default=340)
    parser.add_argument("--idle-connections", type=int, default=300)
    parser.add_argument("--kill-every", type=float, default=20.0)
    parser.add_argument("--drain-timeout", type=float, default=120.0)
    args = parser.parse_args(argv)
    args.pressure_seconds = args.pressure_seconds or args.phase_seconds
    kinds = [k for k in args.scenarios.split(",") if k]
    unknown = [k for k in kinds if k not in SCENARIOS]
    if unknown:
        parser.error(f"unknown scenario(s) {', '.join(unknown)}: one of {', '.join(SCENARIOS)}")
    wanted = [k for k in args.systems.split(",") if k]
    if not wanted or any(k not in SYSTEMS for k in wanted):
        parser.error(f"--systems {args.systems!r}: one or more of {', '.join(SYSTEMS)}")
    from bench import pressure_peer
    if "procrastinate" in wanted and pressure_peer.app is None:
        parser.error("procrastinate is not installed here: pip install -e '.[bench]' "
                     "(or --systems jobq)")
    cluster = Cluster(autovacuum=args.autovacuum == "on", max_connections=args.max_connections)
    atexit.register(cluster.destroy)  # after the bench database is dropped (atexit is LIFO)
    cluster.start()
    os.environ["BENCH_DATABASE_URL"] = cluster.url
    from bench import env  # the bench database in the cluster, migrated
    from bench.common import make_tenant, print_table, write_result

    systems: list[System] = []
    if "jobq" in wanted:
        tenants = [make_tenant(f"압박 학원 {i}") for i in range(TENANTS)]
        systems.append(pressure_peer.jobq(env.DATABASE_URL, tenants, echo_queue()))
    if "procrastinate" in wanted:
        systems.append(pressure_peer.procrastinate(cluster.url))
    results = []
    for system in systems:  # one after the other: neither's workers idle beside the other's
        workers = system.start_workers()
        try:
            warm = Load(system.url, args.rate, system.offer)  # first runs of each process
            warm.start()
            time.sleep(5)
            warm.stop_event.set()
            warm.join(10)
            drain(system, warm.accepted, args.drain_timeout)
            for kind in kinds:
                print(f"{system.name}, {kind}: {args.phase_seconds:g} s clean, "
                      f"{args.pressure_seconds:g} s pressure, {args.phase_seconds:g} s recovery "
                      f"at {args.rate:g} jobs/s", flush=True)
                results.append(run_scenario(kind, args, system, cluster, workers))
        finally:
            workers.stop()
    rows = []
    tables = {s.name: s.hot_tables for s in systems}
    for r in results:
        for phase, p in r["phases"].items():
            d = p["dead_tuples"] or {}
            hot = tables[r["system"]]
            rows.append((r["system"], r["scenario"], phase, p["per_s"], p["x_clean"],
                         p["pickup_p50_ms"], p["pickup_p99_ms"],
                         f"{d.get(hot[0], '-')} / {d.get(hot[1], '-')}",
                         f"{r['recover_s']} / {r['latency_recover_s']} / "
                         f"{r['dead_recover_s']}"
                         if phase == "recovery" else "",
                         f"{r['lost']} / {r['ran_twice']}" if phase == "recovery" else ""))
    print_table(f"Under pressure ({args.rate:g} jobs/s offered, autovacuum "
                f"{args.autovacuum}, load {os.getloadavg()[0]:.1f})",
                ["system", "scenario", "phase", "done/s", "× clean", "pickup p50 ms", "p99 ms",
                 "dead tuples: jobs / fair_queue (jobq), events (procrastinate)",
                 "recovered s: rate / latency / dead", "lost / twice"], rows)
    for r in results:
        for phase, p in r["phases"].items():
            if "handed_p50_ms" in p:
                print(f"{r['system']}, {r['scenario']}, {phase}: insert -> handed to the broker "
                      f"p50 {p['handed_p50_ms']} / p99 {p['handed_p99_ms']} ms (of pickup "
                      f"{p['pickup_p50_ms']} / {p['pickup_p99_ms']} ms)")
    for r in results:
        for phase in ("clean", "pressure"):
            print(f"\n{r['system']}, {r['scenario']}, {phase}: the statements walking the most "
                  "buffers")
            for st in r.get("statements", {}).get(phase, []):
                print(f"  {st['buffers_per_call']:>9} buf/call {st['ms_per_call']:>8} ms/call "
                      f"{st['calls']:>7} calls  {st['query'][:110]}")
    print(f"written {write_result('pressure', {'args': vars(args), 'cluster': cluster.settings, 'results': results})}")
