"""Leases: how a live run proves it is alive, so a long healthy run is never taken away.

Each process that runs jobs owns ``host:pid``. A claim leases the job to it for
``JOBQ_LEASE_SECONDS``; a daemon thread renews the leases of the process's running jobs every
third of that. A run whose lease lapsed belongs to a dead (or wedged) process and is recovered
by ``recover_lost_runs``; a redelivered message for a run whose owner pid is gone from this host
takes it over at once.
"""

from __future__ import annotations

import logging
import os
import socket
import threading

from app import audit, db
from app.settings import settings

log = logging.getLogger("jobq.lease")

HOST = socket.gethostname()


def owner() -> str:
    """This process's lease-owner name."""
    return f"{HOST}:{os.getpid()}"


def owner_is_dead(lease_owner: str | None) -> bool:
    """True only when the owner was a process on this host that no longer exists."""
    if not lease_owner or ":" not in lease_owner:
        return False
    host, _, pid = lease_owner.rpartition(":")
    if host != HOST or not pid.isdigit():
        return False
    pid_n = int(pid)
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
    """Renews the leases of the jobs this process is running."""

    def __init__(self) -> None:
        self._running: set[str] = set()
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._pid = os.getpid()

    def track(self, job_id: str) -> None:
        with self._lock:
            if self._pid != os.getpid():  # forked: the parent's thread did not come along
                self._running.clear()
                self._thread = None
                self._pid = os.getpid()
            self._running.add(job_id)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._loop, name="jobq-lease", daemon=True)
                self._thread.start()

    def untrack(self, job_id: str) -> None:
        with self._lock:
            self._running.discard(job_id)

    def _loop(self) -> None:
        interval = settings.lease_seconds / 3
        while True:
            self._wake.wait(interval)
            with self._lock:
                ids = list(self._running)
            if not ids:
                continue
            try:
                with db.status_conn() as conn:
                    audit.renew_leases(conn, ids, owner=owner(), lease=settings.lease_seconds)
            except Exception as exc:  # the database is away; try again next round
                log.warning("could not renew %d lease(s): %s", len(ids), exc)


keeper = LeaseKeeper()
