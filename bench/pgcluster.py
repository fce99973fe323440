"""A PostgreSQL cluster of a benchmark's own: initdb into a temporary directory, configured as
production runs it (autovacuum on unless asked otherwise, durable commits), on a port of its own,
so a benchmark may stop, start, starve and hold it without touching the shared server.

Run as root, the cluster belongs to the ``postgres`` system user (initdb refuses root).
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

#: What differs from initdb's defaults: production-like for a small machine (the public
#: harness's postgres.conf has autovacuum on with its defaults, durable commits, and room for
#: many connections).
SETTINGS = {
    "listen_addresses": "'127.0.0.1'",
    "shared_buffers": "'256MB'",
    "work_mem": "'16MB'",
    "maintenance_work_mem": "'128MB'",
    "effective_cache_size": "'1GB'",
    "synchronous_commit": "on",
    "fsync": "on",
    "wal_level": "replica",
    "max_wal_size": "'2GB'",
    "checkpoint_timeout": "'5min'",
    "autovacuum": "on",
    "autovacuum_naptime": "'10s'",
    "log_min_messages": "warning",
    "logging_collector": "off",
    "jit": "off",
    # What each statement costs, per phase (bench pressure's profile of the hot statements).
    "shared_preload_libraries": "'pg_stat_statements'",
    "pg_stat_statements.track": "all",
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _bin(name: str) -> str:
    found = shutil.which(name)
    if found:
        return found
    for d in sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True):
        if (d / name).exists():
            return str(d / name)
    raise SystemExit(f"{name} not found: install PostgreSQL's server binaries")


class Cluster:
    """initdb'd on construction; :meth:`start`, :meth:`stop`, :meth:`destroy`."""

    def __init__(self, *, port: int | None = None, autovacuum: bool = True,
                 max_connections: int = 400, extra: dict[str, str] | None = None) -> None:
        self.port = port or free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="jobq-pg-"))
        self.data = self.dir / "data"
        self.log = self.dir / "postgres.log"
        self._as = self._owner()
        self._run([_bin("initdb"), "-D", str(self.data), "-U", "postgres", "-A", "trust",
                   "-E", "UTF8", "--no-sync"])
        settings = {**SETTINGS, "port": str(self.port), "max_connections": str(max_connections),
                    "unix_socket_directories": f"'{self.dir}'",
                    "autovacuum": "on" if autovacuum else "off", **(extra or {})}
        with open(self.data / "postgresql.conf", "a") as conf:
            conf.write("\n# bench/pgcluster.py\n")
            conf.writelines(f"{k} = {v}\n" for k, v in settings.items())
        self.settings = settings

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _owner(self) -> list[str]:
        """The command prefix that runs as the cluster's owner (root may not)."""
        if os.geteuid() != 0:
            return []
        pw = pwd.getpwnam("postgres")
        os.chown(self.dir, pw.pw_uid, pw.pw_gid)
        return ["runuser", "-u", "postgres", "--"]

    def _run(self, args: list[str], check: bool = True) -> subprocess.CompletedProcess:
        return subprocess.run([*self._as, *args], check=check, capture_output=True, text=True)

    def start(self, timeout: float = 60) -> float:
        """Start it and wait until it accepts connections; the seconds that took."""
        t0 = time.monotonic()
        self._run([_bin("pg_ctl"), "-D", str(self.data), "-l", str(self.log), "-w",
                   "-t", str(int(timeout)), "start"])
        return time.monotonic() - t0

    def stop(self, mode: str = "fast") -> None:
        self._run([_bin("pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop"], check=False)

    def running(self) -> bool:
        return self._run([_bin("pg_ctl"), "-D", str(self.data), "status"],
                         check=False).returncode == 0

    def destroy(self) -> None:
        with contextlib.suppress(Exception):
            self.stop("immediate")
        shutil.rmtree(self.dir, ignore_errors=True)
