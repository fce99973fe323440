"""Machine CPU a benchmark run costs, split by process: the bench's workers, PostgreSQL, Redis.

A thread reads ``/proc/<pid>/stat`` (user + system time, in clock ticks) of every process of
interest every ``interval`` seconds (0.1 s) and keeps the series; the caller then asks for the
CPU seconds spent between two wall-clock times (the drain's first start and last completion),
taken from the last sample at or before the start and the first at or after the end. So the
window is at most one interval wider at each side: worker start-up CPU just before the first
job may leak in (short runs show it most; ``--jobs 20000`` makes it negligible).

Which processes, and how exits are handled:

* worker: every process in the sessions of the processes the bench started (each is started
  with ``start_new_session``: the session id is the started process's pid), beat included when
  a path needs it. Counted as utime + stime + cutime + cstime: a pool child that exits and is
  reaped by its worker moves its time into the worker's cutime, so nothing is lost or counted
  twice (a process that vanishes is dropped if its parent was in the session, else kept at its
  last seen value).
* PostgreSQL: the postmaster serving the bench's database (the parent of the bench's own
  backend), its auxiliary processes (checkpointer, WAL writer, background writer, launchers)
  and the backends connected to the bench's database (their process title names it); backends
  of other databases on the same server (other benchmarks) are left out. utime + stime only:
  the postmaster's cutime would also collect other databases' exited backends, so a backend
  of ours that exits keeps its last seen value (up to one interval of its CPU is lost; jobq's
  pools keep their connections, so few exit). The bench's own polling backend is counted.
* Redis: the redis-server process serving the bench's URL (``INFO server`` gives its pid),
  utime + stime + cutime + cstime (a BGSAVE child is reaped into cutime). Redis is shared: what
  other benchmarks on the same server make it do, and the bench's own polling of the queue
  (every 5 ms for the bare and stock paths), is counted too.

The bench process itself (enqueueing happens before the workers start; polling during the
drain) is not counted. On a shared, noisy machine these are rough figures: compare runs of
one invocation.
"""

from __future__ import annotations

import os
import re
import threading
import time
from collections.abc import Iterable

TICK = os.sysconf("SC_CLK_TCK")
GROUPS = ("worker", "postgres", "redis")
_BACKEND = re.compile(r"\(\d+\)|\[local\]|autovacuum worker")


def _stat(pid: int) -> tuple[int, int, int, int] | None:
    """``(ppid, session, utime + stime, cutime + cstime)`` in ticks, or None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            raw = fh.read()
    except OSError:
        return None
    f = raw[raw.rindex(b")") + 2:].split()
    return int(f[1]), int(f[3]), int(f[11]) + int(f[12]), int(f[13]) + int(f[14])


def _title(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            return fh.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _pids() -> list[int]:
    return [int(p) for p in os.listdir("/proc") if p.isdigit()]


def postmaster_pid() -> int | None:
    """The postmaster of the server holding the bench's database (None if not on this host)."""
    from sqlalchemy import text

    from app.store import db

    with db.engine().connect() as conn:
        backend = conn.execute(text("SELECT pg_backend_pid()")).scalar_one()
    st = _stat(backend)
    return st[0] if st else None


def redis_pid() -> int | None:
    from bench.common import redis_client

    return int(redis_client().info("server")["process_id"]) or None


class CpuSampler:
    """Samples the CPU time of the worker sessions, PostgreSQL and Redis until stopped."""

    def __init__(self, sessions: Iterable[int], *, postmaster: int | None,
                 redis: int | None, database: str, interval: float = 0.1) -> None:
        self.sessions = set(sessions)
        self.postmaster = postmaster
        self.redis = redis
        self.database = database
        self.interval = interval
        self.samples: list[tuple[float, dict[str, float]]] = []
        # per group: pid -> (ppid, last seen ticks); pids whose title says "another database"
        self._seen: dict[str, dict[int, tuple[int, int]]] = {g: {} for g in GROUPS}
        self._kept: dict[str, int] = dict.fromkeys(GROUPS, 0)
        self._foreign: set[int] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="cpu-sampler", daemon=True)

    def add_sessions(self, sessions: Iterable[int]) -> None:
        self.sessions.update(sessions)

    def start(self) -> None:
        self.sample()
        self._thread.start()

    def stop(self) -> None:
        if not self._stop.is_set():
            self._stop.set()
            self._thread.join()
            self.sample()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.sample()

    def _group(self, pid: int, ppid: int, session: int) -> str | None:
        if session in self.sessions:
            return "worker"
        if pid == self.redis:
            return "redis"
        if self.postmaster and (pid == self.postmaster or ppid == self.postmaster):
            if pid in self._foreign:
                return None
            title = _title(pid)
            if self.database not in title and _BACKEND.search(title):
                self._foreign.add(pid)
                return None
            return "postgres"
        return None

    def sample(self) -> None:
        now = time.time()
        live: dict[str, dict[int, tuple[int, int]]] = {g: {} for g in GROUPS}
        for pid in _pids():
            st = _stat(pid)
            if st is None:
                continue
            ppid, session, own, children = st
            group = self._group(pid, ppid, session)
            if group is None:
                continue
            live[group][pid] = (ppid, own if group == "postgres" else own + children)
        totals = {}
        for g in GROUPS:
            for pid, (ppid, ticks) in self._seen[g].items():
                # Gone: dropped if reaped into a counted parent's cutime, else kept as last seen.
                if pid not in live[g] and (g == "postgres" or ppid not in live[g]):
                    self._kept[g] += ticks
            self._seen[g] = live[g]
            totals[g] = (self._kept[g] + sum(t for _, t in live[g].values())) / TICK
        self.samples.append((now, totals))

    def between(self, t0: float, t1: float) -> dict[str, float]:
        """CPU seconds per group from the last sample at or before ``t0`` to the first at or
        after ``t1`` (the window's bounds are returned as ``window_s``)."""
        before = [s for s in self.samples if s[0] <= t0] or self.samples[:1]
        after = [s for s in self.samples if s[0] >= t1] or self.samples[-1:]
        (a_t, a), (b_t, b) = before[-1], after[0]
        out = {g: round(b[g] - a[g], 3) for g in GROUPS}
        out["window_s"] = round(b_t - a_t, 3)
        return out


def per_job(cpu: dict[str, float], jobs: int) -> dict[str, float]:
    """Milliseconds of CPU per job per group, and their total."""
    ms = {g: round(cpu[g] * 1000 / jobs, 3) for g in GROUPS}
    ms["total"] = round(sum(ms[g] for g in GROUPS), 3)
    return ms
