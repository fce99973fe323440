"""Faults, with real prefork workers and beat on a PostgreSQL and a Redis of this module's own:
pool children and whole workers killed, a warm shutdown, Redis restarted empty (once, and three
times in a row), PostgreSQL restarted, Redis down while callers submit, PostgreSQL down while
dispatches arrive; and a pool process's memory through a thousand failing jobs.

Each test sends a few hundred jobs of the test intents (tests/intents.py) and asserts, per job:
it ended ``completed``; an effect written in the run's transaction happened exactly once
(effectively once: committed with ``completed`` or rolled back with the run); an effect
committed on its own (the journal) happened at least once (repeats are counted and printed,
not failed: the engine promises at-least-once there); nothing is left pending or processing;
the history ends in one ``completed`` event of the last attempt. Each prints its figures:
jobs sent, completed, duplicated (must be 0), stuck (must be 0) and the time to recover.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import pytest
import redis
from sqlalchemy import Engine, text

from app.store import db
from tests.fixtures import (
    ROOT,
    BeatProcess,
    WorkerProcess,
    spawn_beat,
    spawn_worker,
    wait_for,
)
from tests.intents import EFFECTS_DDL
from tests.services import PrivateServices

pytestmark = [
    pytest.mark.slow,
    # pgserver looks for a runtime folder that containers seldom have; it falls back to /tmp.
    pytest.mark.filterwarnings("ignore:XDG_RUNTIME_DIR is not set"),
]

IN_TRANSACTION = "test.exec.record_in_transaction"
OUTSIDE = "test.exec.record_outside"
#: The realtime worker of app/ops/workers.py, serving every queue the test intents use.
WORKER_ARGS = ("-P", "prefork", "-c", "2", "-Q", "celery,dispatch,realtime,maintenance")
JOBS = 300
#: Long enough that a kill lands mid-run; short enough for 300 jobs on two pool processes.
RUN_SECONDS = 0.06
#: Runs long enough to be caught by a kill or a shutdown for sure.
VICTIM_SECONDS = 1.5
FINISH_TIMEOUT = 90.0
#: Seconds a caller's transaction may take while the broker is down (the publish gives up).
CALLER_PATIENCE = 5.0


def mixed_jobs(n: int = JOBS, seconds: float = RUN_SECONDS, victims: int = 0
               ) -> list[dict[str, Any]]:
    """Two of every three jobs write their effect in the run's transaction, one outside;
    ``victims`` of them, evenly spread, run for VICTIM_SECONDS, so a kill can land mid-run."""
    jobs = [{"intent_key": OUTSIDE if i % 3 == 2 else IN_TRANSACTION,
             "intent_params": {"seconds": seconds}} for i in range(n)]
    for k in range(victims):
        jobs[(k + 1) * n // (victims + 1)]["intent_params"]["seconds"] = VICTIM_SECONDS
    return jobs


# --- what the table says ------------------------------------------------------------------------


@dataclass
class Figures:
    """What a fault did to the jobs sent through it."""

    fault: str
    sent: int
    completed: int = 0
    statuses: dict[str, int] = field(default_factory=dict)
    #: Extra runs of effects the engine promises effectively once (must be 0).
    duplicated: int = 0
    #: Completed jobs without their effect (must be 0).
    missing_effects: int = 0
    #: Extra runs of at-least-once effects (allowed; shown).
    repeated_outside: int = 0
    #: Left pending or processing (must be 0).
    stuck: int = 0
    #: Job rows beyond one per job sent (must be 0).
    extra_rows: int = 0
    lost_attempts: int = 0
    most_attempts: int = 0
    #: From the end of the fault until the first job completed after it: work resumed.
    resumed_s: float | None = None
    #: From the end of the fault until the last job it caught finished (backlog included).
    recovered_s: float | None = None
    history_problems: list[str] = field(default_factory=list)

    def line(self) -> str:
        def seconds(value: float | None) -> str:
            return "-" if value is None else f"{value:.1f}s"

        return (f"[fault] {self.fault}: sent={self.sent} completed={self.completed} "
                f"duplicated={self.duplicated} stuck={self.stuck} "
                f"resumed_in={seconds(self.resumed_s)} recovered_in={seconds(self.recovered_s)} "
                f"(lost attempts {self.lost_attempts}, most attempts {self.most_attempts}, "
                f"journal repeats {self.repeated_outside})")

    def assert_clean(self) -> None:
        assert self.stuck == 0, self.line()
        assert self.completed == self.sent, f"{self.statuses}: {self.line()}"
        assert self.duplicated == 0, self.line()
        assert self.missing_effects == 0, self.line()
        assert self.extra_rows == 0, self.line()
        assert self.history_problems == [], self.history_problems[:5]


_JOBS = text(
    """
    SELECT j.id::text AS id, j.intent_key, j.status, coalesce(j.retry_count, 0) AS retries,
           j.result, j.lease_owner, extract(epoch FROM j.completed_at) AS completed_at,
           (SELECT count(*) FROM test_side_effects e WHERE e.job_id = j.id) AS effects,
           (SELECT array_agg(e.attempt) FROM test_side_effects e WHERE e.job_id = j.id)
               AS effect_attempts,
           (SELECT array_agg(v.attempt) FROM job_events v
             WHERE v.job_id = j.id AND v.kind = 'completed') AS completed_attempts,
           (SELECT count(*) FROM job_events v WHERE v.job_id = j.id AND v.kind = 'lost')
               AS lost
      FROM job_executions j WHERE j.id = ANY(CAST(:ids AS uuid[]))
    """
)


def read_jobs(engine: Engine, ids: Sequence[str]) -> list[dict[str, Any]]:
    with engine.connect() as conn:
        return [dict(r) for r in conn.execute(_JOBS, {"ids": list(ids)}).mappings()]


def audit(engine: Engine, fault: str, ids: Sequence[str], tenant: str,
          caught: Sequence[str] = (), fault_ended: float | None = None) -> Figures:
    rows = read_jobs(engine, ids)
    with engine.connect() as conn:
        tenant_rows = conn.execute(text("SELECT count(*) FROM job_executions WHERE tenant_id = "
                                        "CAST(:t AS uuid)"), {"t": tenant}).scalar_one()
    figures = Figures(fault, sent=len(ids), extra_rows=tenant_rows - len(ids))
    figures.statuses = dict(Counter(r["status"] for r in rows))
    figures.completed = figures.statuses.get("completed", 0)
    figures.stuck = sum(1 for r in rows if r["status"] in ("pending", "processing"))
    figures.stuck += len(ids) - len(rows)  # never written at all: lost
    for r in rows:
        extra = max(0, r["effects"] - 1)
        if r["intent_key"] == OUTSIDE:
            figures.repeated_outside += extra
        else:
            figures.duplicated += extra
        if r["status"] == "completed" and r["effects"] == 0:
            figures.missing_effects += 1
        figures.lost_attempts += r["lost"]
        figures.most_attempts = max(figures.most_attempts, r["retries"] + 1)
        figures.history_problems += history_problems(r)
    if fault_ended is not None:
        by_id = {r["id"]: r for r in rows}
        ends = [by_id[i]["completed_at"] for i in caught if by_id.get(i)]
        if ends and all(e is not None for e in ends):
            figures.recovered_s = round(max(0.0, float(max(ends)) - fault_ended), 2)
        after = [float(r["completed_at"]) for r in rows
                 if r["completed_at"] is not None and float(r["completed_at"]) >= fault_ended]
        if after:
            figures.resumed_s = round(min(after) - fault_ended, 2)
    return figures


def history_problems(row: dict[str, Any]) -> list[str]:
    """How a completed job's record disagrees with itself: one ``completed`` event, of the
    attempt that ran last, whose result and (in-transaction) effect name that same attempt."""
    if row["status"] != "completed":
        return []
    attempt = row["retries"] + 1
    problems = []
    if row["completed_attempts"] != [attempt]:
        problems.append(f"{row['id']}: completed events {row['completed_attempts']}, "
                        f"attempt {attempt}")
    if (row["result"] or {}).get("attempt") != attempt:
        problems.append(f"{row['id']}: result {row['result']} is not of attempt {attempt}")
    if row["intent_key"] == IN_TRANSACTION and row["effect_attempts"] not in ([attempt], None):
        problems.append(f"{row['id']}: effect of attempts {row['effect_attempts']}, "
                        f"completed attempt {attempt}")
    if row["lease_owner"] is not None:
        problems.append(f"{row['id']}: completed but still leased to {row['lease_owner']}")
    return problems


# --- the system under test ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def services() -> Iterator[PrivateServices]:
    # A short path of its own: PostgreSQL's unix socket path must stay under 108 bytes.
    home = Path(tempfile.mkdtemp(prefix="jobq-faults-"))
    svc = PrivateServices(home).start()
    try:
        db.migrate(svc.database_url())
        with svc.engine().begin() as conn:
            conn.exec_driver_sql(EFFECTS_DDL)
        yield svc
    finally:
        svc.close()


@dataclass
class Sent:
    ids: list[str]
    #: Seconds each of the caller's batches took (a transaction and its publish, for submit).
    seconds: list[float]


@dataclass
class FaultSystem:
    """Workers, beat and callers of the private services, all real processes."""

    services: PrivateServices
    directory: Path
    tenant: str
    engine: Engine
    workers: list[WorkerProcess] = field(default_factory=list)
    beats: list[BeatProcess] = field(default_factory=list)

    def env(self) -> dict[str, str]:
        # Workers start in their own folder: the test intents import from the repository.
        return {**self.services.env(), "JOBQ_MANIFEST": "tests.manifest:INTENTS",
                "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT),
                                                             os.environ.get("PYTHONPATH")]))}

    def start_worker(self, *args: str, wait: bool = True) -> WorkerProcess:
        worker = spawn_worker(self.directory, *(args or WORKER_ARGS), env=self.env(), wait=False)
        self.workers.append(worker)
        if wait:
            wait_ready(worker)
        return worker

    def start_beat(self, wait: bool = True) -> BeatProcess:
        beat = spawn_beat(self.directory, env=self.env(), wait=False)
        self.beats.append(beat)
        if wait:
            beat.wait_ready()
        return beat

    def start(self, workers: int = 1) -> list[WorkerProcess]:
        """``workers`` realtime workers and a beat, started side by side."""
        started = [self.start_worker(wait=False) for _ in range(workers)]
        beat = self.start_beat(wait=False)
        for worker in started:
            wait_ready(worker)
        beat.wait_ready()
        return started

    def send(self, jobs: list[dict[str, Any]], how: str = "submit", batch: int = 100) -> Sent:
        """Call jobq from a process bound to the private services (tests/caller.py)."""
        done = subprocess.run(
            [sys.executable, "-m", "tests.caller", how, "--tenant", self.tenant,
             "--batch", str(batch)],
            input=json.dumps(jobs), capture_output=True, text=True, cwd=ROOT, timeout=120,
            env={**os.environ, **self.env(), "LOG_LEVEL": "WARNING"},
        )
        assert done.returncode == 0, done.stderr[-3000:]
        out = json.loads(done.stdout)
        return Sent(out["ids"], out["seconds"])

    def count(self, ids: Sequence[str], *statuses: str) -> int:
        with self.engine.connect() as conn:
            return conn.execute(text(
                "SELECT count(*) FROM job_executions WHERE id = ANY(CAST(:ids AS uuid[])) "
                "AND status = ANY(:s)"), {"ids": list(ids), "s": list(statuses)}).scalar_one()

    def wait_completed(self, ids: Sequence[str], at_least: int, timeout: float = 60.0) -> None:
        wait_for(lambda: self.count(ids, "completed") >= at_least, timeout, interval=0.1,
                 message=f"{at_least} jobs completed")

    def running(self, ids: Sequence[str], pids: Sequence[int] | None = None) -> dict[str, int]:
        """Jobs processing now -> the pid holding their lease (only ``pids``, when given)."""
        with self.engine.connect() as conn:
            rows = conn.execute(text(
                "SELECT id::text, lease_owner FROM job_executions WHERE status = 'processing' "
                "AND id = ANY(CAST(:ids AS uuid[]))"), {"ids": list(ids)}).all()
        held = {job: lease_pid(owner) for job, owner in rows if owner}
        return {job: pid for job, pid in held.items() if pids is None or pid in pids}

    def unfinished(self, ids: Sequence[str]) -> list[str]:
        with self.engine.connect() as conn:
            return [r[0] for r in conn.execute(text(
                "SELECT id::text FROM job_executions WHERE id = ANY(CAST(:ids AS uuid[])) "
                "AND status IN ('pending', 'processing')"), {"ids": list(ids)})]

    def wait_finished(self, ids: Sequence[str], timeout: float = FINISH_TIMEOUT) -> None:
        """Until no job is pending or processing, or ``timeout``: the audit tells what is left."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.count(ids, "completed", "failed", "cancelled") == len(ids):
                return
            time.sleep(0.2)

    def finish(self, fault: str, sent: Sent, caught: Sequence[str] = (),
               fault_ended: float | None = None) -> Figures:
        self.wait_finished(sent.ids)
        figures = audit(self.engine, fault, sent.ids, self.tenant, caught, fault_ended)
        report(figures)
        return figures

    def stop(self) -> None:
        for process in [*self.beats, *self.workers]:
            process.stop(timeout=20)


def wait_ready(worker: WorkerProcess, timeout: float = 40.0) -> None:
    """Its log says ``ready.`` (a ping would need a Celery client of the private broker)."""

    def ready() -> bool:
        if worker.proc.poll() is not None:
            raise AssertionError(f"worker {worker.name} exited early:\n{worker.log()[-3000:]}")
        return " ready." in worker.log()

    wait_for(ready, timeout, interval=0.1, message=f"worker {worker.name} to be ready")


_reports: list[str] = []


def report(figures: Figures) -> None:
    _reports.append(figures.line())


@pytest.fixture(autouse=True)
def _print_figures(capsys) -> Iterator[None]:
    # The measured figures belong on the terminal, not only in captured output.
    yield
    with capsys.disabled():
        for line in _reports:
            print("\n" + line, end="")
        _reports.clear()


@pytest.fixture
def system(services: PrivateServices, tmp_path: Path) -> Iterator[FaultSystem]:
    # A failed test may have left a service down: every test starts with both up and empty.
    if not services.postgres_running():
        services.start_postgres()
    if not services.redis_running():
        services.start_redis()
    redis.Redis.from_url(services.redis_url).flushall()
    engine = services.engine()
    with engine.begin() as conn:
        conn.exec_driver_sql("TRUNCATE job_events, job_executions, test_side_effects")
        tenant = conn.execute(text("INSERT INTO tenants (name) VALUES ('장애 시험 학원') "
                                   "RETURNING id::text")).scalar_one()
    fs = FaultSystem(services, tmp_path, tenant, engine)
    try:
        yield fs
    finally:
        fs.stop()


def lease_pid(lease_owner: str) -> int:
    """The pid in a lease owner's name: ``host:pid``, or ``host:pid:token`` per run."""
    host_pid = lease_owner.split(":")[:2]
    return int(host_pid[1])


def worker_running_a_victim(system: FaultSystem, ids: Sequence[str],
                            workers: Sequence[WorkerProcess]) -> WorkerProcess:
    """Whichever of ``workers`` is running a victim job now."""

    def find() -> WorkerProcess | None:
        return next((w for w in workers if running_victims(system, ids, w.child_pids())), None)

    return wait_for(find, 30, interval=0.02, message="a worker running a victim job")


def running_victims(system: FaultSystem, ids: Sequence[str], pids: Sequence[int]
                    ) -> dict[str, int] | None:
    """Victim jobs that ``pids`` started less than half their run ago -> the pid."""
    with system.engine.connect() as conn:
        rows = conn.execute(text(
            "SELECT id::text, lease_owner FROM job_executions WHERE status = 'processing' "
            "AND id = ANY(CAST(:ids AS uuid[])) "
            "AND CAST(intent_params->>'seconds' AS float) >= :long "
            "AND executed_at > now() - make_interval(secs => :long / 2)"),
            {"ids": list(ids), "long": VICTIM_SECONDS}).all()
    held = {job: lease_pid(owner) for job, owner in rows if owner}
    return {job: pid for job, pid in held.items() if pid in pids} or None


def caught_by(system: FaultSystem, ids: Sequence[str], pids: Sequence[int]) -> list[str]:
    """Jobs left processing under a lease of ``pids`` (runs a kill interrupted, including
    finished runs whose batched completion had not been written yet)."""
    return list(system.running(ids, list(pids)))


def kill_running_child(system: FaultSystem, worker: WorkerProcess, ids: Sequence[str],
                       killed: set[int], caught: Sequence[str] = ()) -> list[str]:
    """SIGKILL a pool child of ``worker`` in the middle of a job not ``caught`` before; the
    jobs it caught.

    ``killed`` holds the pids killed before: until the pool reaps one, it still lists it. (A
    job caught before runs again at once; killing it again would prove less.)
    """

    def live_victim() -> dict[str, int] | None:
        live = [pid for pid in worker.child_pids() if pid not in killed]
        held = running_victims(system, [i for i in ids if i not in caught], live)
        return held or None

    held = wait_for(live_victim, 30, interval=0.02, message="a pool child running a victim job")
    pid = next(iter(held.values()))
    os.kill(pid, signal.SIGKILL)
    killed.add(pid)
    return caught_by(system, ids, [pid])


# --- processes killed and stopped ---------------------------------------------------------------


def test_pool_children_killed_mid_job_each_job_completes_with_its_effect_once(system):
    worker = system.start()[0]
    sent = system.send(mixed_jobs(victims=5))

    caught: list[str] = []
    killed: set[int] = set()
    for _ in range(3):
        caught += kill_running_child(system, worker, sent.ids, killed, caught)
        killed_at = time.time()

    figures = system.finish("pool child SIGKILL x3", sent, caught, killed_at)
    figures.assert_clean()
    # Every killed run shows in its job's history as a lost attempt, and ran again.
    assert len(set(caught)) >= 3
    assert all(r["lost"] == 1 and r["retries"] == 1 for r in read_jobs(system.engine, caught))
    assert worker.proc.poll() is None and len(worker.child_pids()) == 2  # the pool refilled


def test_whole_worker_killed_its_jobs_are_finished_by_the_other_worker(system):
    workers = system.start(workers=2)
    sent = system.send(mixed_jobs(victims=3))
    doomed = worker_running_a_victim(system, sent.ids, workers)
    survivor = next(w for w in workers if w is not doomed)
    children = doomed.child_pids()

    os.killpg(doomed.pid, signal.SIGKILL)  # main process and pool, as a lost machine would
    killed_at = time.time()
    doomed.proc.wait(10)
    caught = caught_by(system, sent.ids, children)

    figures = system.finish("whole worker SIGKILL", sent, caught, killed_at)
    figures.assert_clean()
    assert caught and all(r["lost"] == 1 for r in read_jobs(system.engine, caught))
    assert survivor.proc.poll() is None


def test_worker_stopped_with_sigterm_finishes_its_running_jobs_and_loses_none(system):
    workers = system.start(workers=2)
    sent = system.send(mixed_jobs(victims=3))
    stopping = worker_running_a_victim(system, sent.ids, workers)
    staying = next(w for w in workers if w is not stopping)
    caught = caught_by(system, sent.ids, stopping.child_pids())

    stopping.proc.send_signal(signal.SIGTERM)  # warm shutdown
    assert stopping.proc.wait(30) == 0
    stopped_at = time.time()

    figures = system.finish("worker SIGTERM (warm shutdown)", sent, caught, stopped_at)
    figures.assert_clean()
    # A warm shutdown is no fault at all: the runs it caught finished where they ran, and
    # the messages it had reserved went back to the queue, so no run was lost.
    assert figures.lost_attempts == 0 and figures.most_attempts == 1
    with system.engine.connect() as conn:
        finishers = conn.execute(text(
            "SELECT DISTINCT worker FROM job_events WHERE kind = 'completed' "
            "AND job_id = ANY(CAST(:ids AS uuid[]))"), {"ids": caught}).scalars().all()
    assert finishers == [stopping.name]
    assert staying.proc.poll() is None


# --- services restarted -------------------------------------------------------------------------


@pytest.mark.smoke
def test_redis_restarted_with_its_data_lost_every_job_still_completes_once(system, services):
    worker = system.start()[0]
    sent = system.send(mixed_jobs())
    system.wait_completed(sent.ids, at_least=60)
    caught = system.unfinished(sent.ids)  # queued in Redis or running

    services.restart_redis(down_seconds=1.0)
    restarted_at = time.time()

    figures = system.finish("Redis restarted, data lost", sent, caught, restarted_at)
    figures.assert_clean()
    assert len(caught) > 100  # most of the jobs lost their message
    assert worker.proc.poll() is None


def test_worker_survives_redis_restarting_three_times_while_it_acks_jobs(system, services):
    worker = system.start()[0]
    # Short runs: acknowledgements are always in flight when Redis goes.
    sent = system.send(mixed_jobs(600, seconds=0.005))
    caught: set[str] = set()
    for round_ in range(3):
        system.wait_completed(sent.ids, at_least=50 + 150 * round_)
        caught |= set(system.unfinished(sent.ids))
        services.restart_redis(down_seconds=1.0)
        restarted_at = time.time()

    figures = system.finish("Redis restarted x3, data lost", sent, list(caught), restarted_at)
    # The worker lived through it: no supervisor was needed to finish the jobs.
    assert worker.proc.poll() is None, worker.log()[-3000:]
    figures.assert_clean()


def test_postgres_restarted_while_workers_run_records_every_run_once_it_is_back(
        system, services):
    worker = system.start()[0]
    children = sorted(worker.child_pids())
    sent = system.send(mixed_jobs())
    system.wait_completed(sent.ids, at_least=60)
    caught = system.unfinished(sent.ids)

    # Down for longer than a lease (3 s here): no lease can be renewed meanwhile.
    services.restart_postgres(down_seconds=5.0, mode="fast")
    restarted_at = time.time()

    figures = system.finish("PostgreSQL restarted (5 s down)", sent, caught, restarted_at)
    figures.assert_clean()
    # The workers rode it out: same main process, same pool processes.
    assert worker.proc.poll() is None and sorted(worker.child_pids()) == children
    assert "could not record" not in worker.log()


def test_redis_down_while_callers_submit_rows_are_kept_and_published_when_it_returns(
        system, services):
    worker = system.start()[0]
    services.stop_redis()

    sent = system.send(mixed_jobs(), batch=50)  # six callers' transactions

    # A caller is not held up by the outage: its commit returns, the publish gives up fast.
    assert max(sent.seconds) < CALLER_PATIENCE, sent.seconds
    # Every row is kept, waiting (the worker's feeder keeps trying to hand them over: a row it
    # is trying right now is stamped until the broker refuses it).
    with system.engine.connect() as conn:
        kept = conn.execute(text(
            "SELECT count(*) FROM job_executions WHERE id = ANY(CAST(:ids AS uuid[])) "
            "AND status = 'pending' AND executed_at IS NULL"), {"ids": sent.ids}).scalar_one()
    assert kept == JOBS
    services.start_redis()
    back_at = time.time()

    figures = system.finish(f"Redis down during submit (batches took {max(sent.seconds):.1f}s "
                            "at most)", sent, sent.ids, back_at)
    figures.assert_clean()
    assert worker.proc.poll() is None


def test_database_unreachable_when_dispatch_runs_the_dispatch_is_retried_not_lost(
        system, services):
    worker = system.start()[0]
    services.stop_postgres()

    sent = system.send(mixed_jobs(), how="dispatch")
    wait_for(lambda: "database unavailable for dispatch" in worker.log(), 20,
             message="the dispatches to meet the outage")
    time.sleep(3.0)  # dispatches keep failing and retrying meanwhile
    services.start_postgres()
    back_at = time.time()

    figures = system.finish("PostgreSQL down during dispatch_intent", sent, sent.ids, back_at)
    figures.assert_clean()  # extra_rows == 0: a retried dispatch wrote its row once
    assert worker.proc.poll() is None


# --- memory ---------------------------------------------------------------------------------------


def test_pool_process_memory_stays_flat_through_a_thousand_failing_jobs(system):
    worker = system.start_worker("-P", "prefork", "-c", "1", "-Q", "realtime")
    failing = [{"intent_key": IN_TRANSACTION, "intent_params": {"fail": True}}]

    def rss() -> float:
        (child,) = worker.child_pids()
        return psutil.Process(child).memory_info().rss / 2**20

    def rss_after(n: int) -> float:
        sent = system.send(failing * n, batch=500)
        system.wait_finished(sent.ids)
        assert system.count(sent.ids, "failed") == n
        return rss()

    fresh = rss()
    warm = rss_after(200)  # the handler imported, connection pools filled
    last = rss_after(1000)

    _reports.append(f"[memory] a pool process: {fresh:.0f} MB fresh, {warm:.0f} MB after 200 "
                    f"failing jobs, {last:.0f} MB after 1000 more")
    assert last - warm < 15, f"it grew {last - warm:.0f} MB over 1000 failing jobs"
    assert last - fresh < 40, f"it holds {last - fresh:.0f} MB more than when it started"
