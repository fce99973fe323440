"""Soak: 50,000 jobs of mixed intents (fast, slow, flaky, failing) kept flowing while a fault
strikes every 30 s, on a PostgreSQL and a Redis of its own, with the worker set-up of
app/ops/workers.py plus beat; then the table is audited and worker memory judged.

    python -m bench soak [--jobs 50000] [--fault-every 30] [--faults child,worker,redis,postgres]
                         [--max-backlog 1000] [--drain-timeout 900] [--around 30]

Faults rotate: a realtime pool child killed (SIGKILL) mid-job; a whole worker (main process and
pool) killed and started again; Redis restarted with its data lost; PostgreSQL crashed (an
immediate stop) and started again. Production timings throughout (30 s leases, republish after
60 s), so recovery figures are what an installation would see. The shared PostgreSQL and Redis
are never touched. Writes bench/results/soak.json.

Per fault it prints the recovery (until every job the fault caught finished) and the jobs sent
by the caller and finished by the workers in the ``--around`` seconds before the fault and in
as many seconds after it ended (issue 24: after a worker's SIGKILL, never below half the rate
before; ``python -m bench soak --jobs 20000 --faults worker`` kills the realtime and bulk
workers in turn). A window cut short by the end of sending is marked.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
from rich.console import Console
from rich.table import Table
from sqlalchemy import Engine, text

# Nothing of jobq is imported before the private services' URLs are in the environment.
from tests.services import PrivateServices

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
# Wide enough for the summary tables when the output goes to a file.
console = Console(width=150)

IN_TRANSACTION = "test.exec.record_in_transaction"
OUTSIDE = "test.exec.record_outside"
BULK = "test.exec.record_in_transaction_bulk"


@dataclass(frozen=True)
class Kind:
    """One kind of job in the mix."""

    intent: str
    params: dict[str, Any]
    share: float
    expected: str  # the status it must end in
    #: How many times its effect may happen: exactly once, or at least once (the journal).
    exactly_once: bool = True


MIX: dict[str, Kind] = {
    "fast": Kind(IN_TRANSACTION, {}, 0.46, "completed"),
    "fast_journal": Kind(OUTSIDE, {}, 0.22, "completed", exactly_once=False),
    "slow_realtime": Kind(IN_TRANSACTION, {"seconds": 0.2}, 0.02, "completed"),
    "slow_bulk": Kind(BULK, {"seconds": 0.3}, 0.02, "completed"),
    "flaky": Kind(IN_TRANSACTION, {"transient_failures": 2}, 0.12, "completed"),
    "flaky_journal": Kind(OUTSIDE, {"transient_failures": 1}, 0.06, "completed",
                          exactly_once=False),
    "failing": Kind(IN_TRANSACTION, {"fail": True}, 0.10, "failed"),
}
FAULTS = ("child", "worker", "redis", "postgres")
#: Memory is judged after this share of the run (pools import handlers lazily at first).
WARMUP_SHARE = 0.2
#: Worker memory counts as flat when it grew less than this from the second fifth to the last.
FLAT_GROWTH_PCT = 10.0


# --- processes ------------------------------------------------------------------------------------


class Processes:
    """The workers of app/ops/workers.py and a beat, started (and restarted) by role."""

    def __init__(self, home: Path, env: dict[str, str]):
        self.home = home
        self.env = env
        self.procs: dict[str, subprocess.Popen] = {}
        self.starts: Counter[str] = Counter()

    def start(self, role: str) -> subprocess.Popen:
        from app.ops.workers import worker_args

        self.starts[role] += 1
        log = self.home / f"{role}-{self.starts[role]}.log"
        if role == "beat":
            cmd = ["beat", "-l", "WARNING", "--schedule", str(self.home / "beat-schedule"),
                   "--pidfile="]
        else:
            cmd = ["worker", "-l", "WARNING", *worker_args(role)]
        with open(log, "wb") as out:
            proc = subprocess.Popen([sys.executable, "-m", "celery", "-A", "app", *cmd],
                                    cwd=ROOT, env=self.env, stdout=out, stderr=subprocess.STDOUT,
                                    start_new_session=True)
        self.procs[role] = proc
        return proc

    def pids(self, role: str) -> list[int]:
        """The main process and its pool."""
        proc = self.procs[role]
        with contextlib.suppress(psutil.Error):
            return [proc.pid, *(c.pid for c in psutil.Process(proc.pid).children())]
        return [proc.pid]

    def revive_dead(self) -> list[dict[str, Any]]:
        """Start again any process that exited on its own, as a supervisor would (compose's
        ``restart: unless-stopped``); what died, when and how, for the report."""
        deaths = []
        for role, proc in list(self.procs.items()):
            if proc.poll() is not None:
                log = self.home / f"{role}-{self.starts[role]}.log"
                last = [ln for ln in log.read_text(errors="replace").splitlines()
                        if "CRITICAL/" in ln or "Unrecoverable" in ln][-1:]
                deaths.append({"role": role, "at": time.time(), "exit_code": proc.returncode,
                               "last_critical": last[0][-200:] if last else None})
                self.start(role)
        return deaths

    def kill(self, role: str) -> None:
        proc = self.procs[role]
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)

    def stop_all(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for role, proc in self.procs.items():
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                self.kill(role)

    def error_lines(self) -> dict[str, Any]:
        """ERROR and CRITICAL lines per role over every log, the most frequent first."""
        found: dict[str, Counter[str]] = defaultdict(Counter)
        for log in sorted(self.home.glob("*.log")):
            role = log.stem.rsplit("-", 1)[0]
            for line in log.read_text(errors="replace").splitlines():
                if "ERROR/" in line or "CRITICAL/" in line:
                    # "[time: LEVEL/Process] logger: message [job_id=...]" -> "logger: message"
                    message = line.split("] ", 1)[-1].split(" [job_id=")[0]
                    found[role][message[:140]] += 1
        return {role: {"lines": sum(c.values()), "top": c.most_common(6)}
                for role, c in found.items()}


def wait_until_answering(node: str, timeout: float = 60.0) -> None:
    from app.broker.celery_app import celery_app

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(Exception):
            if celery_app.control.ping(destination=[node], timeout=1.0):
                return
        time.sleep(0.5)
    raise SystemExit(f"worker {node} did not answer a ping in {timeout:.0f}s")


# --- the caller -----------------------------------------------------------------------------------


@dataclass
class Sent:
    kind: str
    at: float


class Submitter(threading.Thread):
    """A caller submitting batches in transactions of its own, as fast as the backlog allows.

    Job ids are chosen here, so a batch retried after a database error that may have committed
    finds its rows instead of writing them twice.
    """

    def __init__(self, tenant: str, total: int, batch: int, max_backlog: int, engine: Engine):
        super().__init__(name="soak-submitter", daemon=True)
        self.tenant, self.total, self.batch = tenant, total, batch
        self.max_backlog, self.engine = max_backlog, engine
        self.jobs: dict[str, Sent] = {}
        self.retried_batches = 0
        self.stopping = threading.Event()
        self.rng = random.Random(20261126)
        self.finished_at: float | None = None

    def backlog(self) -> int | None:
        try:
            with self.engine.connect() as conn:
                return conn.execute(text("SELECT count(*) FROM job_executions "
                                         "WHERE status IN ('pending', 'processing')")).scalar()
        except Exception:  # the database is away: wait
            return None

    def _pick(self) -> str:
        return self.rng.choices(list(MIX), weights=[k.share for k in MIX.values()])[0]

    def run(self) -> None:
        from app.core.validation import Request
        from app.intake.submit import submit_many
        from app.store import db

        while len(self.jobs) < self.total and not self.stopping.is_set():
            backlog = self.backlog()
            if backlog is None or backlog >= self.max_backlog:
                time.sleep(0.2)
                continue
            n = min(self.batch, self.total - len(self.jobs), self.max_backlog - backlog)
            batch = [(str(uuid.uuid4()), self._pick()) for _ in range(n)]
            requests = [Request(self.tenant, MIX[k].intent, MIX[k].params, job_id=i)
                        for i, k in batch]
            while not self.stopping.is_set():
                try:
                    with db.session() as session:
                        submit_many(session, requests)
                        session.commit()
                    break
                except Exception:  # the database restarting: the same ids again
                    self.retried_batches += 1
                    time.sleep(0.5)
            now = time.time()
            for job_id, kind in batch:
                self.jobs[job_id] = Sent(kind, now)
        self.finished_at = time.time()


# --- memory ---------------------------------------------------------------------------------------


class MemorySampler(threading.Thread):
    """Resident memory of every worker (main process plus pool) and of Redis, every few
    seconds."""

    def __init__(self, procs: Processes, redis_url: str, interval: float = 5.0):
        super().__init__(name="soak-memory", daemon=True)
        self.procs, self.redis_url, self.interval = procs, redis_url, interval
        self.samples: list[dict[str, Any]] = []
        self.stopping = threading.Event()

    def run(self) -> None:
        import redis

        client = redis.Redis.from_url(self.redis_url, socket_connect_timeout=1, socket_timeout=1)
        while not self.stopping.wait(self.interval):
            sample: dict[str, Any] = {"t": time.time()}
            for role in ("realtime", "bulk", "beat"):
                try:
                    main = psutil.Process(self.procs.procs[role].pid)
                    children = main.children()
                    sample[role] = {
                        "main_mb": round(main.memory_info().rss / 2**20, 1),
                        "pool_mb": [round(c.memory_info().rss / 2**20, 1) for c in children],
                    }
                except (psutil.Error, KeyError):
                    continue
            with contextlib.suppress(Exception):
                sample["redis_mb"] = round(client.info("memory")["used_memory"] / 2**20, 1)
            self.samples.append(sample)


def judge_memory(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """Per worker, after warm-up: total RSS (main + pool) in the first fifth against the last,
    the main process alone, and the largest pool process of each fifth (a pool process that
    leaks climbs from fifth to fifth; one replaced by a fault starts low again)."""
    judged: dict[str, Any] = {}
    if len(samples) < 10:
        return judged
    steady = samples[int(len(samples) * WARMUP_SHARE):]
    size = max(1, len(steady) // 5)
    fifths = [steady[i * size:(i + 1) * size] for i in range(5)]

    def median_of(part: list[dict[str, Any]], value) -> float | None:
        found = [v for s in part if (v := value(s)) is not None]
        return statistics.median(found) if found else None

    for role in ("realtime", "bulk", "beat", "redis"):
        if role == "redis":
            def total(s: dict[str, Any]) -> float | None:
                return s.get("redis_mb")
            main = total
        else:
            def total(s: dict[str, Any], role: str = role) -> float | None:
                r = s.get(role)
                return None if r is None else r["main_mb"] + sum(r["pool_mb"])

            def main(s: dict[str, Any], role: str = role) -> float | None:
                r = s.get(role)
                return None if r is None else r["main_mb"]
        early, late = median_of(fifths[0], total), median_of(fifths[-1], total)
        if early is None or late is None:
            continue
        growth = 100.0 * (late - early) / early if early else 0.0
        entry: dict[str, Any] = {
            "early_mb": round(early, 1), "late_mb": round(late, 1),
            "max_mb": round(max(v for s in samples if (v := total(s)) is not None), 1),
            "growth_pct": round(growth, 1), "flat": growth < FLAT_GROWTH_PCT,
            "main_early_mb": median_of(fifths[0], main), "main_late_mb": median_of(fifths[-1], main),
        }
        if role != "redis":
            entry["largest_pool_process_mb_by_fifth"] = [
                max((max(s[role]["pool_mb"], default=0.0) for s in part if role in s),
                    default=None) for part in fifths]
        judged[role] = entry
    return judged


# --- faults ---------------------------------------------------------------------------------------


@dataclass
class Fault:
    n: int
    kind: str
    detail: str
    at: float
    ended: float
    #: Jobs the fault caught: running in a killed process, or in flight at a service fault.
    caught: list[str] = field(default_factory=list)


def _processing(engine: Engine, pids: list[int] | None = None) -> list[str]:
    """Jobs processing now (under a lease of ``pids``, when given)."""
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT id::text, lease_owner FROM job_executions "
                                 "WHERE status = 'processing'")).all()
    if pids is None:
        return [r[0] for r in rows]
    wanted = {str(p) for p in pids}
    return [job for job, owner in rows if owner and owner.split(":")[1] in wanted]


def _in_flight(engine: Engine) -> list[str]:
    """Jobs handed to the broker or running: what a Redis restart can catch."""
    with engine.connect() as conn:
        return [r[0] for r in conn.execute(text(
            "SELECT id::text FROM job_executions WHERE status = 'processing' "
            "OR (status = 'pending' AND published_at IS NOT NULL)"))]


def inject(n: int, kind: str, procs: Processes, services: PrivateServices, engine: Engine,
           worker_turn: int) -> Fault:
    at = time.time()
    if kind == "child":
        pool = procs.pids("realtime")[1:]
        deadline = time.monotonic() + 20
        while not pool and time.monotonic() < deadline:  # a pool being refilled
            time.sleep(0.5)
            pool = procs.pids("realtime")[1:]
        if not pool:
            raise SystemExit(f"the realtime worker has no pool (exit code "
                             f"{procs.procs['realtime'].poll()}); see {procs.home}")
        running = [p for p in pool if _processing(engine, [p])]
        victim = (running or pool)[0]
        os.kill(victim, signal.SIGKILL)
        ended = time.time()
        return Fault(n, kind, f"realtime pool pid {victim}", at, ended,
                     _processing(engine, [victim]))
    if kind == "worker":
        role = ("realtime", "bulk")[worker_turn % 2]
        pids = procs.pids(role)
        procs.kill(role)
        ended = time.time()
        caught = _processing(engine, pids)
        procs.start(role)
        return Fault(n, kind, f"{role} worker (pids {pids}) killed and started again", at, ended,
                     caught)
    if kind == "redis":
        caught = _in_flight(engine)
        services.restart_redis(down_seconds=1.0)
        return Fault(n, kind, "Redis killed, 1 s down, started empty", at, time.time(), caught)
    if kind == "postgres":
        caught = _processing(engine)
        services.restart_postgres(down_seconds=3.0, mode="immediate")
        return Fault(n, kind, "PostgreSQL crashed (immediate stop), 3 s down, started", at,
                     time.time(), caught)
    raise SystemExit(f"unknown fault {kind!r}")


# --- the audit ------------------------------------------------------------------------------------

_JOBS = text(
    """
    SELECT j.id::text, j.status, coalesce(j.retry_count, 0) + 1 AS attempts,
           extract(epoch FROM j.completed_at) AS finished_at,
           (SELECT count(*) FROM test_side_effects e WHERE e.job_id = j.id) AS effects,
           (SELECT count(*) FROM job_events v WHERE v.job_id = j.id AND v.kind = 'lost') AS lost
      FROM job_executions j
    """
)


def around(times: list[float], at: float, ended: float, span: float) -> tuple[int, int]:
    """How many of ``times`` fall in the ``span`` seconds before a fault began (``at``) and in
    the ``span`` seconds after it ended (``ended``); the fault itself is in neither."""
    before = sum(1 for t in times if at - span <= t < at)
    after = sum(1 for t in times if ended <= t < ended + span)
    return before, after


def audit(engine: Engine, jobs: dict[str, Sent], faults: list[Fault], span: float = 30.0,
          sending_ended: float = float("inf")) -> dict[str, Any]:
    with engine.connect() as conn:
        rows = {r[0]: r for r in conn.execute(_JOBS)}
    statuses: Counter[str] = Counter()
    by_kind: dict[str, Counter[str]] = defaultdict(Counter)
    problems: Counter[str] = Counter()
    duplicated_jobs: list[str] = []
    stuck_jobs: list[str] = []
    attempts: Counter[int] = Counter()
    for job_id, sent in jobs.items():
        kind = MIX[sent.kind]
        row = rows.get(job_id)
        status = row[1] if row else "missing"
        statuses[status] += 1
        by_kind[sent.kind][status] += 1
        if row is None:
            problems["missing (never written)"] += 1
            continue
        attempts[row[2]] += 1
        effects = row[4]
        if status in ("pending", "processing"):
            stuck_jobs.append(job_id)
        elif status != kind.expected:
            problems[f"{sent.kind} ended {status}, expected {kind.expected}"] += 1
        if kind.exactly_once and effects > 1:
            duplicated_jobs.append(job_id)
        if not kind.exactly_once and effects > 1:
            problems["journal effect repeated (at least once: allowed)"] += effects - 1
        if status == "completed" and effects == 0:
            problems["completed without its effect"] += 1
        if status == "failed" and kind.expected == "failed" and effects:
            problems["failed job left an effect"] += 1
    unknown = len(rows) - len(set(rows) & set(jobs))
    duplicated, stuck = set(duplicated_jobs), set(stuck_jobs)

    sent_at = [s.at for s in jobs.values()]
    finished_at = [float(r[3]) for r in rows.values() if r[3]]
    windows = []
    for i, fault in enumerate(faults):
        until = faults[i + 1].at if i + 1 < len(faults) else float("inf")
        ids = [j for j, s in jobs.items() if fault.at <= s.at < until]
        finished = [float(rows[j][3]) for j in fault.caught if j in rows and rows[j][3]]
        all_done = len(finished) == len(fault.caught)
        after = [float(r[3]) for r in rows.values() if r[3] and float(r[3]) >= fault.ended]
        windows.append({
            "n": fault.n, "fault": fault.kind, "detail": fault.detail,
            "at_s": round(fault.at - faults[0].at, 1),
            "sent": len(ids),
            "completed": sum(1 for j in ids if j in rows and rows[j][1] == "completed"),
            "failed_as_expected": sum(1 for j in ids if j in rows and rows[j][1] == "failed"
                                      and MIX[jobs[j].kind].expected == "failed"),
            "duplicated": sum(1 for j in ids if j in duplicated),
            "stuck": sum(1 for j in ids if j in stuck),
            "caught": len(fault.caught),
            "resumed_s": round(min(after) - fault.ended, 1) if after else None,
            "recovered_s": (round(max(0.0, max(finished) - fault.ended), 1)
                            if all_done and finished else None),
            **dict(zip(("sent_before", "sent_after"),
                       around(sent_at, fault.at, fault.ended, span), strict=True)),
            **dict(zip(("finished_before", "finished_after"),
                       around(finished_at, fault.at, fault.ended, span), strict=True)),
            # The window after reaches past the end of sending / of the last completion.
            "sent_after_cut": fault.ended + span > sending_ended,
            "finished_after_cut": fault.ended + span > max(finished_at, default=0.0),
        })
    return {
        "statuses": dict(statuses),
        "by_kind": {k: dict(v) for k, v in by_kind.items()},
        "duplicated": len(duplicated_jobs),
        "stuck": len(stuck_jobs),
        "stuck_sample": stuck_jobs[:10],
        "rows_not_sent_by_the_soak": unknown,
        "problems": dict(problems),
        "attempts": dict(sorted(attempts.items())),
        "lost_attempts": sum(r[5] for r in rows.values()),
        "faults": windows,
    }


def by_fault_kind(windows: list[dict[str, Any]]) -> dict[str, Any]:
    """Recovery per kind of fault: median and worst."""
    out: dict[str, Any] = {}
    for kind in FAULTS:
        mine = [w for w in windows if w["fault"] == kind]
        if not mine:
            continue
        resumed = [w["resumed_s"] for w in mine if w["resumed_s"] is not None]
        recovered = [w["recovered_s"] for w in mine if w["recovered_s"] is not None]
        out[kind] = {
            "times": len(mine),
            "sent": sum(w["sent"] for w in mine),
            "completed": sum(w["completed"] for w in mine),
            "failed_as_expected": sum(w["failed_as_expected"] for w in mine),
            "duplicated": sum(w["duplicated"] for w in mine),
            "stuck": sum(w["stuck"] for w in mine),
            "caught": sum(w["caught"] for w in mine),
            "resumed_s_median": round(statistics.median(resumed), 1) if resumed else None,
            "recovered_s_median": round(statistics.median(recovered), 1) if recovered else None,
            "recovered_s_max": max(recovered) if recovered else None,
        }
    return out


def issue24(windows: list[dict[str, Any]], span: float) -> list[dict[str, Any]]:
    """Issue 24's figures for the worker kills: recovery, and the rate after against before."""
    kills = [w for w in windows if w["fault"] == "worker"]
    recovered = [w["recovered_s"] for w in kills if w["recovered_s"] is not None]
    def lowest(what: str) -> float | None:
        ratios = [w[f"{what}_after"] / w[f"{what}_before"] for w in kills
                  if w.get(f"{what}_before") and not w.get(f"{what}_after_cut")]
        return round(min(ratios), 3) if ratios else None

    rows = [("worker SIGKILL: recovery, median s", statistics.median(recovered)
             if recovered else None, "≤ 10 s"),
            ("worker SIGKILL: recovery, worst s", max(recovered) if recovered else None, "≤ 10 s"),
            (f"worker SIGKILL: jobs finished {span:g} s after / before, lowest", lowest("finished"),
             "≥ 0.5×"),
            (f"worker SIGKILL: jobs sent {span:g} s after / before, lowest", lowest("sent"),
             "≥ 0.5×")]
    return [{"figure": f, "value": None if v is None else round(v, 3), "target": t}
            for f, v, t in rows] if kills else []


# --- the run --------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench soak", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=50_000)
    parser.add_argument("--fault-every", type=float, default=30.0)
    parser.add_argument("--faults", default=",".join(FAULTS))
    parser.add_argument("--max-backlog", type=int, default=1000,
                        help="pending + processing jobs the caller keeps at most")
    parser.add_argument("--batch", type=int, default=50, help="jobs per caller transaction")
    parser.add_argument("--drain-timeout", type=float, default=900.0)
    parser.add_argument("--result", default="soak", help="bench/results/<name>.json")
    parser.add_argument("--around", type=float, default=30.0,
                        help="seconds before and after each fault whose jobs are counted")
    args = parser.parse_args(argv)
    faults_cycle = [f for f in args.faults.split(",") if f]
    for f in faults_cycle:
        if f not in FAULTS:
            parser.error(f"unknown fault {f!r}; choose from {','.join(FAULTS)}")

    home = Path(tempfile.mkdtemp(prefix="jobq-soak-"))  # short: PostgreSQL's socket path
    services = PrivateServices(home).start()
    # The realtime worker in prefork: its pool children are what the "child" fault kills.
    env = {**os.environ, **services.env(), "JOBQ_MANIFEST": "tests.manifest:INTENTS",
           "LOG_LEVEL": "WARNING", "JOBQ_WORKER_POOL": "prefork",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    os.environ.update(env)
    procs = Processes(home, env)
    sampler: MemorySampler | None = None
    submitter: Submitter | None = None
    try:
        from app.store import db
        from tests.intents import EFFECTS_DDL

        db.migrate(services.database_url())
        engine = services.engine()
        with engine.begin() as conn:
            conn.exec_driver_sql(EFFECTS_DDL)
            tenant = conn.execute(text("INSERT INTO tenants (name) VALUES ('내구 시험 학원') "
                                       "RETURNING id::text")).scalar_one()
        for role in ("realtime", "bulk", "beat"):
            procs.start(role)
        host = platform.node()
        wait_until_answering(f"realtime@{host}")
        wait_until_answering(f"bulk@{host}")
        load_at_start = os.getloadavg()[0]
        console.print(f"soak: {args.jobs:,} jobs, a fault every {args.fault_every:.0f}s "
                      f"({', '.join(faults_cycle)}), private services under {home}")

        sampler = MemorySampler(procs, services.redis_url)
        submitter = Submitter(tenant, args.jobs, args.batch, args.max_backlog, engine)
        started = time.time()
        sampler.start()
        submitter.start()

        faults: list[Fault] = []
        worker_turn = 0
        next_fault = started + args.fault_every
        deaths: list[dict[str, Any]] = []
        while submitter.is_alive():
            submitter.join(timeout=max(0.0, min(2.0, next_fault - time.time())))
            for death in procs.revive_dead():
                deaths.append(death)
                console.print(f"  {death['at'] - started:6.0f}s [red]{death['role']} exited "
                              f"({death['exit_code']}) on its own[/red]: {death['last_critical']}")
            if submitter.is_alive() and time.time() >= next_fault:
                kind = faults_cycle[len(faults) % len(faults_cycle)]
                fault = inject(len(faults) + 1, kind, procs, services, engine, worker_turn)
                worker_turn += kind == "worker"
                faults.append(fault)
                console.print(f"  {fault.at - started:6.0f}s fault {fault.n}: {fault.detail}; "
                              f"caught {len(fault.caught)}; {len(submitter.jobs):,} sent")
                next_fault = fault.ended + args.fault_every
        submitted_s = time.time() - started
        console.print(f"  {submitted_s:6.0f}s all {len(submitter.jobs):,} sent; draining")

        deadline = time.time() + args.drain_timeout
        while (backlog := submitter.backlog()) != 0 and time.time() < deadline:
            time.sleep(2.0)
            deaths += procs.revive_dead()
        finished_s = time.time() - started
        sampler.stopping.set()
        sampler.join(10)

        found = audit(engine, submitter.jobs, faults, args.around,
                      submitter.finished_at or float("inf"))
        with engine.connect() as conn:
            first, last = conn.execute(text(
                "SELECT extract(epoch FROM min(executed_at)), extract(epoch FROM max(completed_at)) "
                "FROM job_executions")).one()
        result = {
            "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                        "load_avg_1m_at_start": round(load_at_start, 2),
                        "at": time.strftime("%Y-%m-%dT%H:%M:%S%z")},
            "settings": {"jobs": args.jobs, "fault_every_s": args.fault_every,
                         "faults": faults_cycle, "max_backlog": args.max_backlog,
                         "around_s": args.around,
                         "batch": args.batch,
                         "mix": {k: {"share": v.share, "intent": v.intent, "params": v.params,
                                     "expected": v.expected} for k, v in MIX.items()},
                         "workers": "app/ops/workers.py: realtime prefork -c 2, bulk prefork -c 1; "
                                    "beat; production timings"},
            "sent": len(submitter.jobs),
            "submitting_s": round(submitted_s, 1),
            "total_s": round(finished_s, 1),
            "drained": backlog == 0,
            "jobs_per_s": round(len(submitter.jobs) / (float(last) - float(first)), 1)
            if first and last else None,
            "caller_batches_retried": submitter.retried_batches,
            **found,
            "faults_by_kind": by_fault_kind(found["faults"]),
            "targets": issue24(found["faults"], args.around),
            "memory": judge_memory(sampler.samples),
            "memory_samples": sampler.samples,
            "worker_starts": dict(procs.starts),
            "processes_that_died_on_their_own": [
                {**d, "at_s": round(d.pop("at") - started, 1)} for d in deaths],
            "error_log_lines": procs.error_lines(),
        }
        show(result)
        RESULTS.mkdir(parents=True, exist_ok=True)
        path = RESULTS / f"{args.result}.json"
        path.write_text(json.dumps(result, indent=2, ensure_ascii=False, default=str))
        console.print(f"written {path}")
    finally:
        if submitter is not None:
            submitter.stopping.set()
        if sampler is not None:
            sampler.stopping.set()
        procs.stop_all()
        # The logs outlive the private services' folder, for a look after the run.
        logs = Path(tempfile.mkdtemp(prefix=f"jobq-{args.result}-logs-"))
        for log in home.glob("*.log"):
            shutil.copy(log, logs)
        with contextlib.suppress(OSError):
            shutil.copy(home / "pg" / "log", logs / "postgresql.log")
        console.print(f"logs: {logs}")
        services.close()


def show(r: dict[str, Any]) -> None:
    console.print(f"\n[bold]Soak[/bold]: {r['sent']:,} jobs in {r['total_s']:.0f}s "
                  f"({r['jobs_per_s']} jobs/s), {len(r['faults'])} faults; "
                  f"statuses {r['statuses']}; duplicated {r['duplicated']}, stuck {r['stuck']}, "
                  f"lost attempts {r['lost_attempts']}, caller batches retried "
                  f"{r['caller_batches_retried']}")
    for death in r["processes_that_died_on_their_own"]:
        console.print(f"[red]{death['role']} exited on its own[/red] at {death['at_s']}s "
                      f"(code {death['exit_code']}): {death['last_critical']}")
    if r["problems"]:
        console.print(f"notes: {r['problems']}")
    table = Table("fault", "times", "sent", "completed", "failed (meant to)", "duplicated",
                  "stuck", "caught", "resumed (median s)", "recovered (median / max s)",
                  title="Per fault (jobs sent between one fault and the next)")
    for kind, f in r["faults_by_kind"].items():
        table.add_row(kind, str(f["times"]), f"{f['sent']:,}", f"{f['completed']:,}",
                      f"{f['failed_as_expected']:,}", str(f["duplicated"]), str(f["stuck"]),
                      str(f["caught"]), str(f["resumed_s_median"]),
                      f"{f['recovered_s_median']} / {f['recovered_s_max']}")
    console.print(table)
    span = r["settings"].get("around_s", 30)
    per = Table("n", "fault", "at s", "recovered s", f"sent {span:g} s before", "after",
                f"finished {span:g} s before", "after",
                title=f"Each fault: jobs in the {span:g} s before it and the {span:g} s after it "
                      "(*: that window reaches past the end of sending / of the last completion)")

    def count(w: dict[str, Any], key: str, cut: str) -> str:
        return f"{w[key]:,}" + ("*" if w.get(cut) else "") if key in w else "-"

    for w in r["faults"]:
        per.add_row(str(w["n"]), w["detail"] if w["fault"] == "worker" else w["fault"],
                    f"{w['at_s']:.0f}", str(w["recovered_s"]), count(w, "sent_before", ""),
                    count(w, "sent_after", "sent_after_cut"),
                    count(w, "finished_before", ""),
                    count(w, "finished_after", "finished_after_cut"))
    console.print(per)
    if r.get("targets"):
        found = Table("figure", "measured", "target", title="Issue 24 figures")
        for row in r["targets"]:
            found.add_row(row["figure"], "-" if row["value"] is None else str(row["value"]),
                          row["target"])
        console.print(found)
    memory = Table("process", "total early→late MB", "growth %", "flat", "main early→late MB",
                   "largest pool process per fifth (MB)",
                   title="Resident memory (main + pool) after warm-up")
    for role, m in r["memory"].items():
        main = (f"{m['main_early_mb']:.0f}→{m['main_late_mb']:.0f}"
                if m.get("main_early_mb") is not None else "-")
        pools = ", ".join("-" if v is None else f"{v:.0f}"
                          for v in m.get("largest_pool_process_mb_by_fifth", []))
        memory.add_row(role, f"{m['early_mb']:.0f}→{m['late_mb']:.0f}", f"{m['growth_pct']:+.1f}",
                       "yes" if m["flat"] else "NO", main, pools or "-")
    console.print(memory)


if __name__ == "__main__":
    main()
