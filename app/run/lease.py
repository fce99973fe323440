"""Leases: how a live run proves it is alive, so a long healthy run is never taken away.

Each run owns its lease as ``host:pid:token`` (the token tells apart two runs of one job in
one process, e.g. a cancelled run still finishing beside its retry; unguessable, it is also
the run's secret). A claim leases the job for ``JOBQ_LEASE_SECONDS``; a daemon thread renews
the leases of the process's running jobs every third of that. A run whose lease lapsed belongs
to a dead (or wedged) process and is recovered by ``recover_lost_runs``; a redelivered message
for a run whose owner pid is gone from this host takes it over at once. A process that holds
its liveness lock (:mod:`app.run.liveness`) is known dead the moment the lock is free, and
alive while it holds it, lease or not.

The same thread stops the runs that no longer own their job (cancelled, or taken over): every
:data:`CHECK_SECONDS` it looks up the runs that have been going that long, one primary-key
query for all of them, and interrupts the lost ones (:mod:`app.run.stopping`). An idle process, or
one whose runs are all shorter than that, asks nothing.
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
import threading
import time
from dataclasses import dataclass

from app.core.settings import settings
from app.run import liveness
from app.run.stopping import Stoppable
from app.store import db, jobstore

log = logging.getLogger("jobq.lease")

HOST = socket.gethostname()

#: How often the keeper looks for runs whose job was cancelled or taken over, and how long a run
#: must have been going before it is looked up: a cancel stops a run within about twice this.
CHECK_SECONDS = 0.5


def owner() -> str:
    """A new lease-owner name for one run in this process: ``host:pid:l<process token>-<run
    token>`` while the process holds its liveness lock (app.run.liveness), ``host:pid:<run
    token>`` otherwise. The run token's 128 random bits also make it the secret that binds the
    run's handler connections to the job (alembic 0004)."""
    process = liveness.process.token()
    return f"{HOST}:{os.getpid()}:{f'l{process}-' if process else ''}{secrets.token_hex(16)}"


def owner_pid(lease_owner: str | None) -> int | None:
    """The pid in a lease owner's name (``host:pid:token``)."""
    parts = (lease_owner or "").rsplit(":", 2)
    return int(parts[1]) if len(parts) == 3 and parts[1].isdigit() else None


def owner_is_dead(lease_owner: str | None) -> bool:
    """True only when the owner was a process on this host that no longer exists."""
    if lease_owner is None:
        return False
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


@dataclass(frozen=True)
class _Tracked:
    job_id: str
    run: Stoppable
    since: float


class LeaseKeeper:
    """Renews the leases of the runs this process has going, and stops those that lost them."""

    def __init__(self) -> None:
        self._running: dict[str, _Tracked] = {}  # run's lease owner -> its job
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._pid = os.getpid()

    def track(self, job_id: str, lease_owner: str, run: Stoppable) -> None:
        with self._lock:
            if self._pid != os.getpid():  # forked: the parent's thread did not come along
                self._running.clear()
                self._thread = None
                self._pid = os.getpid()
            self._running[lease_owner] = _Tracked(job_id, run, time.monotonic())
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._loop, name="jobq-lease", daemon=True)
                self._thread.start()

    def untrack(self, lease_owner: str) -> None:
        with self._lock:
            self._running.pop(lease_owner, None)

    def _loop(self) -> None:
        renew_every = settings.lease_seconds / 3
        next_renew = time.monotonic() + renew_every
        while True:
            self._wake.wait(min(CHECK_SECONDS, renew_every))
            with self._lock:
                running = dict(self._running)
            if not running:
                continue
            liveness.process.check()  # a lock lost with its connection is taken again now
            now = time.monotonic()
            if now >= next_renew:
                next_renew = now + renew_every
                self._renew(running)
            settled = {owner: t for owner, t in running.items()
                       if now - t.since >= CHECK_SECONDS}
            if settled:
                self._stop_lost(settled)

    def _renew(self, running: dict[str, _Tracked]) -> None:
        try:
            with db.status_conn() as conn:
                jobstore.renew_leases(conn, [t.job_id for t in running.values()],
                                   owners=list(running), lease=settings.lease_seconds)
        except Exception as exc:  # the database is away; try again next round
            log.warning("could not renew %d lease(s): %s", len(running), exc)

    def _stop_lost(self, runs: dict[str, _Tracked]) -> None:
        try:
            with db.status_conn() as conn:
                lost = jobstore.lost_runs(conn, [t.job_id for t in runs.values()], owners=list(runs))
        except Exception as exc:  # said once per renewal round, when that fails too
            log.debug("could not look for cancelled runs: %s", exc)
            return
        for owner, status in lost.items():
            try:
                runs[owner].run.stop("cancelled" if status == "cancelled" else "taken over")
            except Exception as exc:  # this thread must live on: it renews the other leases
                log.warning("could not stop the run of job %s: %s", runs[owner].job_id, exc)


keeper = LeaseKeeper()
