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


# In a run of parallel processes (pytest-xdist), each process is a worker ("gw0", "gw1", ...) that
# imports this module on its own; the controller names the migrated template they copy.
XDIST_WORKER = os.environ.get("PYTEST_XDIST_WORKER")
TEMPLATE_DB = os.environ.setdefault("JOBQ_TEST_TEMPLATE_DB", f"jobq_test_template_{RUN_ID}")
# A worker process finds COLUMNS=80 and LINES=24 in its environment where its controller had
# none; jobq's console (created at import) would fix its width at 80 and wrap the tables that a
# one-process run prints on one line: a worker gets its controller's values back.
_TERMINAL = ("COLUMNS", "LINES")
os.environ.setdefault("JOBQ_TEST_TERMINAL", " ".join(f"{k}={os.environ.get(k, '')}" for k in _TERMINAL))
if XDIST_WORKER:
    for _name, _value in (pair.split("=", 1) for pair in os.environ["JOBQ_TEST_TERMINAL"].split()):
        if _value:
            os.environ[_name] = _value
        else:
            os.environ.pop(_name, None)

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
        with one_migration_at_a_time():
            if XDIST_WORKER and not NEED_PG:
                _clone_migrated_template()
            else:
                ready.admin_execute(f'CREATE DATABASE "{DB_NAME}"')
                from app.store import db

                db.migrate(DATABASE_URL)
        yield ready
    finally:
        _cleanup(ready)


@contextlib.contextmanager
def one_migration_at_a_time() -> Iterator[None]:
    """Held while this process migrates a database of the shared server: migrations grant to the
    cluster's roles, and two at the same moment fail ("tuple concurrently updated"), whether
    they come from two processes of this run or from two runs side by side."""
    import psycopg2

    admin = psycopg2.connect(ADMIN_URL)
    admin.autocommit = True
    try:
        with admin.cursor() as cur:
            cur.execute("SELECT pg_advisory_lock(hashtext('jobq tests migrate'))")
        yield
    finally:
        admin.close()  # which releases the lock


def _clone_migrated_template() -> None:
    """This process's database as a copy of the run's migrated template, which the first of the
    run's processes to get here creates: one migration per run instead of one per process (6 s
    each). Called holding :func:`one_migration_at_a_time`."""
    import psycopg2

    from app.store import db

    admin = psycopg2.connect(ADMIN_URL)
    admin.autocommit = True
    try:
        with admin.cursor() as cur:
            cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (TEMPLATE_DB,))
            if cur.fetchone() is None:
                cur.execute(f'CREATE DATABASE "{TEMPLATE_DB}"')
                db.migrate(_database_url(ADMIN_URL, TEMPLATE_DB))  # alembic's engine pools
                # nothing: no session stays on the template, which a copy requires
            cur.execute(f'CREATE DATABASE "{DB_NAME}" TEMPLATE "{TEMPLATE_DB}"')
            # A copy takes the template's contents, not its database-level grants (0004 grants
            # CONNECT to the handler role): the same grants on the copy.
            cur.execute("SELECT a.grantee::regrole::text, a.privilege_type "
                        "FROM pg_database d, aclexplode(d.datacl) a "
                        "WHERE d.datname = %s AND a.grantee <> 0 AND a.grantee <> d.datdba",
                        (TEMPLATE_DB,))
            for grantee, privilege in cur.fetchall():
                cur.execute(f'GRANT {privilege} ON DATABASE "{DB_NAME}" TO {grantee}')
    finally:
        admin.close()


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


# --- processes: the tiers run in parallel (pytest-xdist) -------------------------------------------
# Each xdist worker is a process of its own that imports this module, so it draws its own RUN_ID:
# its own database, Redis key prefix and JOBQ_HOME, as two runs side by side already have. Most of
# a test's time is waiting (on workers, timers, subprocesses), so more processes than cores pay.
PROCESSES = 4


def pytest_xdist_auto_num_workers(config) -> int:
    """How many processes ``-n auto`` (the default, pyproject's addopts) means: JOBQ_TEST_PROCESSES
    when set; one (no xdist) for the unit tier alone or for a single file, where starting
    processes costs more than it saves; PROCESSES otherwise."""
    chosen = os.environ.get("JOBQ_TEST_PROCESSES")
    if chosen:
        return int(chosen)
    paths = [Path(arg.split("::")[0]).resolve() for arg in config.args]
    unit = Path(__file__).resolve().parent / "unit"
    if paths and (all(p == unit or unit in p.parents for p in paths)
                  or (len(set(paths)) == 1 and paths[0].is_file())):
        return 0
    return PROCESSES


def pytest_sessionfinish(session, exitstatus) -> None:
    # A run that never needed its services (the unit tier) still leaves no folder behind.
    shutil.rmtree(TEST_HOME, ignore_errors=True)
    if not XDIST_WORKER and getattr(session.config.option, "numprocesses", None) and not NEED_PG:
        # The controller of parallel processes, once they have all stopped: the template goes.
        with contextlib.suppress(Exception):
            Services(ADMIN_URL, DATABASE_URL, REDIS_URL, KEY_PREFIX).admin_execute(
                f'DROP DATABASE IF EXISTS "{TEMPLATE_DB}" WITH (FORCE)')


# The longest files first, so that no process starts one of them when the others are nearly
# done (slowest first; figures of a serial run in the commit that wrote this list). Each test of
# a SPREAD file goes to whichever process is free (their module fixtures are cheap, or their
# tests are so long that starting the fixture again costs little); every other file goes whole
# to one process, its module fixtures (API, Flower, worker processes) started once.
FIRST = (
    "tests/acceptance/test_faults.py",
    "tests/acceptance/test_cli.py",
    "tests/acceptance/test_flower.py",
    "tests/acceptance/test_recovery.py",
    "tests/acceptance/test_secrets.py",
    "tests/acceptance/test_sentinel.py",
    "tests/acceptance/test_cancel.py",
    "tests/acceptance/test_api_streams.py",
    "tests/acceptance/test_hosts.py",
    "tests/integration/test_bad_input.py",
    "tests/integration/test_approvals.py",
    "tests/acceptance/test_beat.py",
    "tests/acceptance/test_api.py",
)
SPREAD = (
    "tests/acceptance/test_faults.py",
    "tests/acceptance/test_cli.py",
    "tests/acceptance/test_flower.py",
    "tests/acceptance/test_recovery.py",
    "tests/integration/test_bad_input.py",
)


def pytest_collection_modifyitems(session, config, items) -> None:
    def rank(item) -> int:
        path = item.nodeid.split("::", 1)[0]
        return FIRST.index(path) if path in FIRST else len(FIRST)

    items.sort(key=rank)  # stable: the rest keep their order


def pytest_xdist_make_scheduler(config, log):
    """Tests to processes as FIRST and SPREAD say, except the files of one ``xdist_group``, which
    go to one process together, one after the other: files that must not run at the same moment
    as each other."""
    from xdist.scheduler import LoadScopeScheduling

    class ByFile(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            if "@" in nodeid:
                return nodeid.rsplit("@", 1)[-1]
            path = nodeid.split("::", 1)[0]
            return nodeid if path in SPREAD else path

    config.option.loadscopereorder = False  # the order above, not the most tests first
    return ByFile(config, log)


pytest_plugins = ["tests.fixtures", "tests.outside", "tests.provider", "tests.flower", "tests.api",
                  "tests.otlp"]
