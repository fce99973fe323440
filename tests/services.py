"""A PostgreSQL and a Redis of a test's (or a benchmark's) own, to crash, stop and restart.

Support for the fault tests and the soak benchmark, built on the embedded servers of
:mod:`app.ops.embedded`; not part of the shipped package (``python -m bench soak`` runs from the
repository's root, where ``tests`` imports).
"""

from __future__ import annotations

import atexit
import contextlib
import shutil
import signal
from dataclasses import dataclass, field
from pathlib import Path

from app.ops.embedded import DATABASE_NAME, EmbeddedPostgres, EmbeddedRedis


@dataclass
class PrivateServices:
    """A PostgreSQL and a Redis of one's own under ``home``, for fault tests and the soak to
    crash, stop and restart (the machine's shared servers are never touched): PostgreSQL on a
    unix socket only, Redis without persistence, so a restart loses every message, as a crashed
    broker without a disk would. :meth:`close` stops both and removes ``home``."""

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
    def database_url(self, database: str = DATABASE_NAME) -> str:
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

    def engine(self):
        """An engine of the caller's own: no pooled connection outlives a restart."""
        from sqlalchemy import create_engine
        from sqlalchemy.pool import NullPool

        url = self.database_url().replace("postgresql://", "postgresql+psycopg2://", 1)
        return create_engine(url, poolclass=NullPool)

    def _admin(self, statement: str) -> None:
        import psycopg2

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
