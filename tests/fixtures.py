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

from app import db
from app.celery_app import celery_app

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


def sql(statement: str, **params: Any) -> list[Any]:
    """Run one statement as the engine's own connection and return its rows."""
    with db.engine().begin() as conn:
        result = conn.execute(text(statement), params)
        return list(result) if result.returns_rows else []


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


@pytest.fixture(scope="module")
def worker() -> Iterator[Any]:
    """An in-thread Celery worker on the real broker, serving every queue."""
    from celery.contrib.testing.worker import start_worker

    with start_worker(celery_app, pool="threads", concurrency=4, perform_ping_check=False,
                      shutdown_timeout=30, loglevel="WARNING") as w:
        yield w


@dataclass
class WorkerProcess:
    """A real ``celery -A app worker`` process, stopped by pid."""

    name: str
    proc: subprocess.Popen
    log_path: Path
    extra_env: dict[str, str] = field(default_factory=dict)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

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
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


@pytest.fixture
def start_worker_process(tmp_path: Path) -> Iterator[Callable[..., WorkerProcess]]:
    """Start real worker processes: ``start_worker_process("-P", "prefork", "-c", "2")``."""
    started: list[WorkerProcess] = []

    def start(*args: str, queues: str | None = None, env: dict[str, str] | None = None,
              wait: bool = True) -> WorkerProcess:
        name = f"test-{uuid.uuid4().hex[:8]}@{os.uname().nodename}"
        log_path = tmp_path / f"{name.split('@')[0]}.log"
        cmd = [sys.executable, "-m", "celery", "-A", "app", "worker", "-n", name,
               "--without-gossip", "--without-mingle", "-l", "INFO", *args]
        if queues:
            cmd += ["-Q", queues]
        full_env = {**os.environ, **(env or {})}
        with open(log_path, "wb") as logfile:
            proc = subprocess.Popen(cmd, cwd=tmp_path, env=full_env, stdout=logfile,
                                    stderr=subprocess.STDOUT, start_new_session=True)
        wp = WorkerProcess(name, proc, log_path, env or {})
        started.append(wp)
        if wait:
            wp.wait_ready()
        return wp

    yield start
    for wp in started:
        wp.stop(timeout=20)
        # Pool children that outlived a killed parent.
        for child in wp.child_pids():
            with contextlib.suppress(ProcessLookupError):
                os.kill(child, signal.SIGKILL)
