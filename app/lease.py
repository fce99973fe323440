"""Leases: how a live run proves it is alive, so a long healthy run is never taken away.

Each run owns its lease as ``host:pid:token`` (the token tells apart two runs of one job in
one process, e.g. a cancelled run still finishing beside its retry; unguessable, it is also
the run's secret). A claim leases the job for ``JOBQ_LEASE_SECONDS``; a daemon thread renews
the leases of the process's running jobs every third of that. A run whose lease lapsed belongs
to a dead (or wedged) process and is recovered by ``recover_lost_runs``; a redelivered message
for a run whose owner pid is gone from this host takes it over at once.
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
import threading

from app import audit, db
from app.settings import settings

log = logging.getLogger("jobq.lease")

HOST = socket.gethostname()


def owner() -> str:
    """A new lease-owner name for one run in this process. Its token's 128 random bits also
    make it the secret that binds the run's handler connections to the job (alembic 0004)."""
    return f"{HOST}:{os.getpid()}:{secrets.token_hex(16)}"


def owner_pid(lease_owner: str | None) -> int | None:
    """The pid in a lease owner's name (``host:pid:token``)."""
    parts = (lease_owner or "").rsplit(":", 2)
    return int(parts[1]) if len(parts) == 3 and parts[1].isdigit() else None


def owner_is_dead(lease_owner: str | None) -> bool:
    """True only when the owner was a process on this host that no longer exists."""
    pid_n = owner_pid(lease_owner)
    if pid_n is None or lease_owner.rsplit(":", 2)[0] != HOST:
        return False
    if pid_n == os.getpid():
        return False
    try:
        os.kill(pid_n, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return _is_zombie(pid_n)


def _is_zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return False


class LeaseKeeper:
    """Renews the leases of the runs this process has going."""

    def __init__(self) -> None:
        self._running: dict[str, str] = {}  # run's lease owner -> job id
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._pid = os.getpid()

    def track(self, job_id: str, lease_owner: str) -> None:
        with self._lock:
            if self._pid != os.getpid():  # forked: the parent's thread did not come along
                self._running.clear()
                self._thread = None
                self._pid = os.getpid()
            self._running[lease_owner] = job_id
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._loop, name="jobq-lease", daemon=True)
                self._thread.start()

    def untrack(self, lease_owner: str) -> None:
        with self._lock:
            self._running.pop(lease_owner, None)

    def _loop(self) -> None:
        interval = settings.lease_seconds / 3
        while True:
            self._wake.wait(interval)
            with self._lock:
                running = dict(self._running)
            if not running:
                continue
            try:
                with db.status_conn() as conn:
                    audit.renew_leases(conn, list(running.values()), owners=list(running),
                                       lease=settings.lease_seconds)
            except Exception as exc:  # the database is away; try again next round
                log.warning("could not renew %d lease(s): %s", len(running), exc)


keeper = LeaseKeeper()
