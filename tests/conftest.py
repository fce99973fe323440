"""Where this test run's services are, and the fixture that makes them ready.

At import nothing is started or created: the run only decides its environment (the local
PostgreSQL, ``TEST_DATABASE_URL``, and Redis, ``TEST_REDIS_URL``, when they answer; otherwise
embedded ones in the run's own folder) and sets it before anything reads jobq's settings, with
``JOBQ_HOME`` in that folder, so no test ever finds the ``.jobq/services.json`` of a ``jobq
run`` beside it. The tiers that need services (``integration``, ``acceptance``, ``handlers``)
use the session fixture :func:`run_services`: it starts embedded servers where needed, creates
the run's database and migrates it; at the end the database, the run's Redis keys and the
embedded servers go. ``unit`` tests need none of it.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

RUN_ID = uuid.uuid4().hex[:10]
TEST_HOME = Path(tempfile.mkdtemp(prefix=f"jobq-test-{RUN_ID}-"))
ADMIN_URL = os.environ.get("TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
KEY_PREFIX = f"jobq-test-{RUN_ID}:"
DB_NAME = f"jobq_test_{RUN_ID}"


def _pg_reachable(url: str) -> bool:
    import psycopg2

    try:
        psycopg2.connect(url, connect_timeout=3).close()
        return True
    except psycopg2.Error:
        return False


def _redis_reachable(url: str) -> bool:
    import redis

    try:
        return bool(redis.Redis.from_url(url, socket_connect_timeout=3).ping())
    except redis.RedisError:
        return False


def _database_url(admin_url: str, name: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(admin_url).set(database=name).render_as_string(hide_password=False)


# Where the embedded servers will be, should the local ones not answer (started on demand).
EMBEDDED_PG = TEST_HOME / "pg"
NEED_PG = not _pg_reachable(ADMIN_URL)
NEED_REDIS = not _redis_reachable(REDIS_URL)
if NEED_PG:
    from app.ops.embedded import EmbeddedPostgres

    ADMIN_URL = EmbeddedPostgres(EMBEDDED_PG).planned_url("postgres")
if NEED_REDIS:
    from app.ops.embedded import free_port

    _REDIS_PORT = free_port()
    REDIS_URL = f"redis://127.0.0.1:{_REDIS_PORT}/0"
DATABASE_URL = _database_url(ADMIN_URL, DB_NAME)

os.environ.update(
    {
        "DATABASE_URL": DATABASE_URL,
        "CELERY_BROKER_URL": REDIS_URL,
        "JOBQ_REDIS_PREFIX": KEY_PREFIX,
        "JOBQ_HOME": str(TEST_HOME),
        # Short timings so recovery and the sweep act within a test's patience.
        "JOBQ_LEASE_SECONDS": "3",
        "JOBQ_REPUBLISH_AFTER": "3",
        "JOBQ_SWEEP_INTERVAL": "0.5",
        "JOBQ_RECOVER_INTERVAL": "0.5",
        "JOBQ_RETRY_BACKOFF_BASE": "0.2",
        # Production's intents plus the tests' own (tests/manifest.py), here and in every
        # process a test starts, wherever its working directory is.
        "JOBQ_MANIFEST": "tests.manifest:INTENTS",
        "PYTHONPATH": os.pathsep.join(
            filter(None, [str(Path(__file__).resolve().parent.parent),
                          os.environ.get("PYTHONPATH")])),
    }
)
os.environ.pop("CELERY_RESULT_BACKEND", None)

from app.core import settings as _settings  # noqa: E402

if _settings.loaded():  # pragma: no cover - a guard against reading them too early again
    raise RuntimeError("jobq's settings were read before the test run chose its services")


@dataclass
class Services:
    """This run's services, once ready: the database (migrated) and the broker."""

    admin_url: str
    database_url: str
    redis_url: str
    key_prefix: str
    _embedded: list = field(default_factory=list, repr=False)

    def admin_execute(self, sql: str) -> None:
        import psycopg2

        conn = psycopg2.connect(self.admin_url)
        conn.autocommit = True
        try:
            with conn.cursor() as cur:
                cur.execute(sql)
        finally:
            conn.close()


@pytest.fixture(scope="session")
def run_services() -> Iterator[Services]:
    """Embedded servers where the local ones do not answer, this run's database, migrated."""
    ready = Services(ADMIN_URL, DATABASE_URL, REDIS_URL, KEY_PREFIX)
    try:
        if NEED_PG:
            from app.ops.embedded import EmbeddedPostgres

            ready._embedded.append(EmbeddedPostgres(EMBEDDED_PG, durable=False).start())
        if NEED_REDIS:
            from app.ops.embedded import EmbeddedRedis

            ready._embedded.append(
                EmbeddedRedis(TEST_HOME / "redis", persistent=False, port=_REDIS_PORT).start())
        ready.admin_execute(f'CREATE DATABASE "{DB_NAME}"')
        from app.store import db

        db.migrate(DATABASE_URL)
        yield ready
    finally:
        _cleanup(ready)


def _cleanup(ready: Services) -> None:
    with contextlib.suppress(Exception):
        from app.store import db

        for eng in list(db._engines.values()):
            eng.dispose()
    with contextlib.suppress(Exception):
        ready.admin_execute(f'DROP DATABASE IF EXISTS "{DB_NAME}" WITH (FORCE)')
    with contextlib.suppress(Exception):
        import redis

        client = redis.Redis.from_url(REDIS_URL)
        keys = list(client.scan_iter(match=KEY_PREFIX + "*", count=1000))
        for start in range(0, len(keys), 500):
            client.delete(*keys[start:start + 500])
    for service in ready._embedded:
        with contextlib.suppress(Exception):
            service.close()
    shutil.rmtree(TEST_HOME, ignore_errors=True)


def pytest_sessionfinish(session, exitstatus) -> None:
    # A run that never needed its services (the unit tier) still leaves no folder behind.
    shutil.rmtree(TEST_HOME, ignore_errors=True)


pytest_plugins = ["tests.fixtures", "tests.outside", "tests.flower", "tests.api"]
