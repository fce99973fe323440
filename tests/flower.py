"""Flower as ``jobq flower`` starts it, for tests: a real process on a free port with basic
auth and its state in the test's folder, read over HTTP."""

from __future__ import annotations

import os
import signal
import subprocess
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from app.intake.submit import submit
from app.ops.embedded import free_port
from app.store import db
from tests.commands import JOBQ
from tests.fixtures import ROOT, wait_for

USER, PASSWORD = "operator", f"pw-{uuid.uuid4().hex[:12]}"


@dataclass
class FlowerProcess:
    proc: subprocess.Popen
    port: int
    log_path: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def get(self, path: str, auth: tuple[str, str] | None = (USER, PASSWORD), **kw):
        return requests.get(self.url + path, auth=auth, timeout=5, **kw)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        return self.proc.returncode


@pytest.fixture
def start_flower(tmp_path: Path) -> Iterator[Callable[..., FlowerProcess]]:
    """``jobq flower`` on a free port, with basic auth, its state under ``tmp_path/home``."""
    started: list[FlowerProcess] = []

    def start(*args: str, env: dict[str, str] | None = None) -> FlowerProcess:
        port = free_port()
        log_path = tmp_path / f"flower-{port}.log"
        full_env = {**os.environ, "JOBQ_HOME": str(tmp_path / "home"),
                    "FLOWER_BASIC_AUTH": f"{USER}:{PASSWORD}", **(env or {})}
        with open(log_path, "wb") as log:
            proc = subprocess.Popen([*JOBQ, "flower", "--port", str(port), *args], cwd=ROOT,
                                    env=full_env, stdout=log, stderr=subprocess.STDOUT,
                                    start_new_session=True)
        flower = FlowerProcess(proc, port, log_path)
        started.append(flower)

        def healthy():
            if proc.poll() is not None:
                raise AssertionError(f"Flower exited early:\n{flower.log()[-3000:]}")
            try:
                return flower.get("/healthcheck", auth=None).ok
            except requests.RequestException:
                return False

        wait_for(healthy, 60, interval=0.2, message="Flower to answer")
        return flower

    yield start
    for flower in started:
        flower.stop()


def wait_for_worker_in(flower: FlowerProcess, worker_name: str,
                       auth: tuple[str, str] | None = (USER, PASSWORD)) -> None:
    """Flower has heard from the worker: the events it sends from now on reach it."""
    wait_for(lambda: flower.get("/api/workers", auth=auth, params={"status": "true"}).json()
             .get(worker_name), 60, interval=0.5, message=f"Flower to see {worker_name}")


def submit_job(tenant: str, intent_key: str, **params) -> str:
    with db.session() as session:
        job_id = submit(session, tenant_id=tenant, intent_key=intent_key, intent_params=params)
        session.commit()
    return job_id


def flower_task(flower: FlowerProcess, job_id: str, state: str | None = None) -> dict:
    def seen():
        response = flower.get(f"/api/task/info/{job_id}")
        if response.status_code != 200:
            return None
        task = response.json()
        return task if state is None or task["state"] == state else None

    return wait_for(seen, 30, interval=0.2, message=f"Flower to show {job_id} {state or ''}")
