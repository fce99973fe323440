"""Fixtures shared by the tests: tenants, an in-thread worker, real worker processes, and
helpers that read what a user would see (rows, events)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

import app.tasks  # noqa: F401  (registers every task, as a worker's include does)
from app.broker.celery_app import celery_app
from app.store import db

ROOT = Path(__file__).resolve().parent.parent
FINISHED = ("completed", "failed", "cancelled")


# --- reading what a user sees -------------------------------------------------------------------


def job_row(job_id: str) -> dict[str, Any] | None:
    with db.engine().connect() as conn:
        row = conn.execute(
            text("SELECT * FROM job_executions WHERE id = CAST(:id AS uuid)"), {"id": str(job_id)}
        ).mappings().first()
    return dict(row) if row else None


def job_events(job_id: str) -> list[dict[str, Any]]:
    with db.engine().connect() as conn:
        rows = conn.execute(
            text("SELECT * FROM job_events WHERE job_id = CAST(:id AS uuid) ORDER BY at, id"),
            {"id": str(job_id)},
        ).mappings().all()
    return [dict(r) for r in rows]


def event_kinds(job_id: str) -> list[tuple[int, str]]:
    return [(e["attempt"], e["kind"]) for e in job_events(job_id)]


def wait_for(predicate: Callable[[], Any], timeout: float = 20.0, interval: float = 0.05,
             message: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {message}")
        time.sleep(interval)


def wait_for_status(job_id: str, *statuses: str, timeout: float = 20.0) -> dict[str, Any]:
    statuses = statuses or FINISHED

    def check():
        row = job_row(job_id)
        return row if row and row["status"] in statuses else None

    try:
        return wait_for(check, timeout, message=f"job {job_id} to be {'/'.join(statuses)}")
    except AssertionError as exc:
        row = job_row(job_id)
        raise AssertionError(f"{exc}; it is {row and row['status']}: {row}") from None


def queued_job_ids(queue: str) -> list[str]:
    """The job ids of the messages waiting in ``queue`` on the broker (not yet taken by any
    worker): what was really published, read straight from Redis."""
    import json

    from app.broker import client as broker_client
    from app.core.settings import settings

    raw = broker_client.client().lrange(settings.redis_key_prefix + queue, 0, -1)
    return [json.loads(m)["headers"]["id"] for m in raw]


def sql(statement: str, **params: Any) -> list[Any]:
    """Run one statement as the engine's own connection and return its rows."""
    with db.engine().begin() as conn:
        result = conn.execute(text(statement), params)
        return list(result) if result.returns_rows else []


@pytest.fixture
def fresh_queues() -> None:
    """Each test starts with empty queues: what earlier tests left pending is cancelled and
    their messages dropped, so it neither fills a queue's window nor waits in its fair queue."""
    from app.broker import client as broker_client
    from app.core.manifest import QUEUES
    from app.core.settings import settings

    sql("UPDATE job_executions SET status = 'cancelled', completed_at = now(), "
        "error_message = 'left pending by an earlier test' WHERE status = 'pending'")
    sql("UPDATE fair_queue SET ready = false WHERE ready")
    broker_client.client().delete(*(settings.redis_key_prefix + q for q in QUEUES))


# --- tenants ------------------------------------------------------------------------------------


def make_tenant(name: str | None = None, status: str = "active") -> str:
    return sql(
        "INSERT INTO tenants (name, status) VALUES (:n, :s) RETURNING id::text",
        n=name or f"테스트 학원 {uuid.uuid4().hex[:6]}", s=status,
    )[0][0]


@pytest.fixture
def tenant() -> str:
    """A fresh active tenant of the test's own."""
    return make_tenant()


# --- workers ------------------------------------------------------------------------------------


@contextlib.contextmanager
def in_thread_worker(concurrency: int = 4) -> Iterator[Any]:
    """An in-thread Celery worker (threads pool) on the real broker, serving every queue."""
    from celery.contrib.testing.worker import start_worker

    from app.run import feeder

    with start_worker(celery_app, pool="threads", concurrency=concurrency,
                      perform_ping_check=False, shutdown_timeout=30, loglevel="WARNING") as w:
        # A worker process starts its fairness feeder when it is ready (app.tasks.signals);
        # Celery's in-thread test worker sends no such signal.
        feeder.start(list(celery_app.amqp.queues), owner=w)
        try:
            yield w
        finally:
            feeder.stop(owner=w)


@pytest.fixture(scope="module")
def worker() -> Iterator[Any]:
    """An in-thread Celery worker on the real broker, serving every queue."""
    with in_thread_worker() as w:
        yield w


@dataclass
class CeleryProcess:
    """A real ``celery -A app ...`` process of the test's own, stopped by pid."""

    name: str
    proc: subprocess.Popen
    log_path: Path

    @property
    def pid(self) -> int:
        return self.proc.pid

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


@dataclass
class WorkerProcess(CeleryProcess):
    """A real ``celery -A app worker`` process."""

    extra_env: dict[str, str] = field(default_factory=dict)

    def child_pids(self) -> list[int]:
        out = subprocess.run(["pgrep", "-P", str(self.pid)], capture_output=True, text=True)
        return [int(p) for p in out.stdout.split()]

    def wait_ready(self, timeout: float = 30.0) -> None:
        def ready():
            if self.proc.poll() is not None:
                raise AssertionError(f"worker {self.name} exited early:\n{self.log()[-3000:]}")
            replies = celery_app.control.ping(destination=[self.name], timeout=0.5)
            return bool(replies)

        wait_for(ready, timeout, interval=0.2, message=f"worker {self.name} to answer a ping")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> None:
        super().stop(sig, timeout)
        # Pool children that outlived a killed parent.
        for child in self.child_pids():
            with contextlib.suppress(ProcessLookupError):
                os.kill(child, signal.SIGKILL)


@dataclass
class BeatProcess(CeleryProcess):
    """A real ``celery -A app beat`` process with its own schedule file."""

    def wait_ready(self, timeout: float = 30.0) -> None:
        def ready():
            if self.proc.poll() is not None:
                raise AssertionError(f"beat {self.name} exited early:\n{self.log()[-3000:]}")
            return "beat: Starting..." in self.log()

        wait_for(ready, timeout, interval=0.1, message=f"beat {self.name} to start")

    def sent(self, task_name: str) -> int:
        """How many times this beat sent ``task_name`` (beat logs each at DEBUG level)."""
        return sum(1 for line in self.log().splitlines()
                   if "Sending due task" in line and line.endswith(f"({task_name})"))


def _spawn(cmd: list[str], directory: Path, log_path: Path, env: dict[str, str] | None):
    full_env = {**os.environ, **(env or {})}
    with open(log_path, "wb") as logfile:
        return subprocess.Popen(cmd, cwd=directory, env=full_env, stdout=logfile,
                                stderr=subprocess.STDOUT, start_new_session=True)


def spawn_worker(directory: Path, *args: str, queues: str | None = None,
                 env: dict[str, str] | None = None, wait: bool = True) -> WorkerProcess:
    """Start ``celery -A app worker`` with ``args``; its log goes to ``directory``."""
    name = f"test-{uuid.uuid4().hex[:8]}@{os.uname().nodename}"
    log_path = directory / f"{name.split('@')[0]}.log"
    cmd = [sys.executable, "-m", "celery", "-A", "app", "worker", "-n", name,
           "--without-gossip", "--without-mingle", "-l", "INFO", *args]
    if queues:
        cmd += ["-Q", queues]
    wp = WorkerProcess(name, _spawn(cmd, directory, log_path, env), log_path, env or {})
    if wait:
        wp.wait_ready()
    return wp


def spawn_beat(directory: Path, env: dict[str, str] | None = None,
               wait: bool = True) -> BeatProcess:
    """Start ``celery -A app beat`` (DEBUG level, so its log names every task it sends)."""
    name = f"beat-{uuid.uuid4().hex[:8]}"
    log_path = directory / f"{name}.log"
    cmd = [sys.executable, "-m", "celery", "-A", "app", "beat", "-l", "DEBUG",
           "--schedule", str(directory / f"{name}-schedule"), "--pidfile="]
    bp = BeatProcess(name, _spawn(cmd, directory, log_path, env), log_path)
    if wait:
        bp.wait_ready()
    return bp


@pytest.fixture
def start_worker_process(tmp_path: Path) -> Iterator[Callable[..., WorkerProcess]]:
    """Start real worker processes: ``start_worker_process("-P", "prefork", "-c", "2")``."""
    started: list[WorkerProcess] = []

    def start(*args: str, queues: str | None = None, env: dict[str, str] | None = None,
              wait: bool = True) -> WorkerProcess:
        wp = spawn_worker(tmp_path, *args, queues=queues, env=env, wait=False)
        started.append(wp)
        if wait:
            wp.wait_ready()
        return wp

    yield start
    for wp in started:
        wp.stop(timeout=20)


@pytest.fixture
def start_beat_process(tmp_path: Path) -> Iterator[Callable[..., BeatProcess]]:
    """Start real beat processes (sweep, recovery, schedules, retention on their timers):
    ``start_beat_process(env={"JOBQ_SCHEDULE_INTERVAL": "0.5"})``."""
    started: list[BeatProcess] = []

    def start(env: dict[str, str] | None = None, wait: bool = True) -> BeatProcess:
        bp = spawn_beat(tmp_path, env=env, wait=False)
        started.append(bp)
        if wait:
            bp.wait_ready()
        return bp

    yield start
    for bp in started:
        bp.stop(timeout=20)


@pytest.fixture
def migrations_alone() -> Iterator[None]:
    """The test migrates databases of the shared server: no other migration meanwhile, in this
    run or another (tests/conftest.py: ``one_migration_at_a_time``)."""
    from tests.conftest import one_migration_at_a_time

    with one_migration_at_a_time():
        yield


@pytest.fixture
def scratch_database() -> Iterator[str]:
    """An empty database of its own (for migrations), dropped afterwards."""
    import psycopg2

    from tests.conftest import ADMIN_URL, _database_url

    name = f"jobq_scratch_{uuid.uuid4().hex[:8]}"
    admin = psycopg2.connect(ADMIN_URL)
    admin.autocommit = True
    admin.cursor().execute(f'CREATE DATABASE "{name}"')
    try:
        yield _database_url(ADMIN_URL, name)
    finally:
        admin.cursor().execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()
