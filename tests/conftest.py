"""Real services for the tests: a PostgreSQL database and a Redis key prefix of this run's own.

The local PostgreSQL (``TEST_DATABASE_URL``, an admin URL; default the local server's
``postgres`` database) and Redis (``TEST_REDIS_URL``) are used when reachable; otherwise the
embedded ones start in a temporary folder. The environment is set before anything reads jobq's
settings, and ``JOBQ_HOME`` points into this run's folder, so no test ever finds the
``.jobq/services.json`` of a ``jobq run`` beside it. Everything is dropped again at the end.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import tempfile
import uuid
from pathlib import Path

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


_embedded: list = []
_need_pg = not _pg_reachable(ADMIN_URL)
_need_redis = not _redis_reachable(REDIS_URL)
if _need_pg or _need_redis:
    # A fresh machine: the embedded servers, in this run's own folder, thrown away at the end.
    from app.embedded import EmbeddedPostgres, EmbeddedRedis

    if _need_pg:
        _pg = EmbeddedPostgres(TEST_HOME / "pg", durable=False).start()
        _embedded.append(_pg)
        ADMIN_URL = _pg.url("postgres")
    if _need_redis:
        _redis = EmbeddedRedis(TEST_HOME / "redis", persistent=False).start()
        _embedded.append(_redis)
        REDIS_URL = _redis.url


def _database_url(admin_url: str, name: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(admin_url).set(database=name).render_as_string(hide_password=False)


def _admin_execute(sql: str) -> None:
    import psycopg2

    conn = psycopg2.connect(ADMIN_URL)
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute(sql)
    finally:
        conn.close()


DATABASE_URL = _database_url(ADMIN_URL, DB_NAME)
_admin_execute(f'CREATE DATABASE "{DB_NAME}"')

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

from app import settings as _settings  # noqa: E402

if _settings.loaded():  # pragma: no cover - a guard against reading them too early again
    raise RuntimeError("jobq's settings were read before the test run chose its services")


def _cleanup() -> None:
    with contextlib.suppress(Exception):
        from app import db

        for eng in list(db._engines.values()):
            eng.dispose()
    with contextlib.suppress(Exception):
        _admin_execute(f'DROP DATABASE IF EXISTS "{DB_NAME}" WITH (FORCE)')
    with contextlib.suppress(Exception):
        import redis

        client = redis.Redis.from_url(REDIS_URL)
        keys = list(client.scan_iter(match=KEY_PREFIX + "*", count=1000))
        for start in range(0, len(keys), 500):
            client.delete(*keys[start:start + 500])
    for service in _embedded:
        with contextlib.suppress(Exception):
            service.close()
    shutil.rmtree(TEST_HOME, ignore_errors=True)


atexit.register(_cleanup)

from app import db as _db  # noqa: E402  (after the environment is set)

_db.migrate(DATABASE_URL)

pytest_plugins = ["tests.fixtures", "tests.outside"]
