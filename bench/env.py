"""A benchmark's own database and Redis key prefix, set up before ``app`` is imported.

Import this module first: jobq reads its settings once, at import.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import tempfile
import uuid
from pathlib import Path

import psycopg2
from sqlalchemy.engine import make_url

#: An existing benchmark database to run against again (one kept by ``bench scale --keep``):
#: migrated to head, not dropped at exit.
REUSE_DB = os.environ.get("BENCH_REUSE_DB")
RUN_ID = REUSE_DB.removeprefix("jobq_bench_") if REUSE_DB else uuid.uuid4().hex[:8]
ADMIN_URL = os.environ.get("BENCH_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
DB_NAME = f"jobq_bench_{RUN_ID}"
KEY_PREFIX = f"jobq-bench-{RUN_ID}:"
HOME = Path(tempfile.mkdtemp(prefix=f"jobq-bench-{RUN_ID}-"))
DATABASE_URL = make_url(ADMIN_URL).set(database=DB_NAME).render_as_string(hide_password=False)
RESULTS = Path(__file__).resolve().parent / "results"


def _admin(sql: str) -> None:
    conn = psycopg2.connect(ADMIN_URL)
    conn.autocommit = True
    try:
        conn.cursor().execute(sql)
    finally:
        conn.close()


if not REUSE_DB:
    _admin(f'CREATE DATABASE "{DB_NAME}"')
os.environ.update({
    "DATABASE_URL": DATABASE_URL,
    "CELERY_BROKER_URL": REDIS_URL,
    "JOBQ_REDIS_PREFIX": KEY_PREFIX,
    "JOBQ_HOME": str(HOME),
    "LOG_LEVEL": os.environ.get("LOG_LEVEL", "WARNING"),
})
os.environ.pop("CELERY_RESULT_BACKEND", None)


def keep() -> None:
    """Keep this benchmark's database and Redis keys after it ends (``--keep``: to EXPLAIN on
    it, or to reuse it with BENCH_REUSE_DB); drop them yourself."""
    atexit.unregister(cleanup)
    print(f"keeping database {DB_NAME} (redis prefix {KEY_PREFIX})", flush=True)


def cleanup() -> None:
    with contextlib.suppress(Exception):
        from app.store import db

        for eng in list(db._engines.values()):
            eng.dispose()
    if not REUSE_DB:
        with contextlib.suppress(Exception):
            _admin(f'DROP DATABASE IF EXISTS "{DB_NAME}" WITH (FORCE)')
    with contextlib.suppress(Exception):
        import redis

        client = redis.Redis.from_url(REDIS_URL)
        keys = list(client.scan_iter(match=KEY_PREFIX + "*", count=1000))
        for i in range(0, len(keys), 500):
            client.delete(*keys[i:i + 500])
    shutil.rmtree(HOME, ignore_errors=True)


atexit.register(cleanup)

from app.store import db as _db  # noqa: E402

_db.migrate(DATABASE_URL)
