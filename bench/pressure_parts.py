"""The parts of ``python -m bench pressure`` (bench/pressure.py): the offered load, each
scenario's pressure, and ``jobq run``'s workers with a way to start one again."""

from __future__ import annotations

import os
import random
import signal
import threading
import time
from collections.abc import Callable
from typing import Any

from bench.pgcluster import Cluster

ECHO = "system.exec.echo"
#: Connections of the bench itself: never terminated, not counted as jobq's.
OWN = "pressure-bench"


def connect(url: str, *, autocommit: bool = True):
    import psycopg2

    conn = psycopg2.connect(url, application_name=OWN, connect_timeout=3)
    conn.autocommit = autocommit
    return conn


class Load(threading.Thread):
    """Offers a job ``rate`` times a second (``offer(cursor, i)``, one insert), reconnecting when
    it must; counts what it could not insert (offered while the server refused)."""

    def __init__(self, url: str, rate: float, offer: Callable[[Any, int], None]) -> None:
        super().__init__(daemon=True)
        self.url, self.rate, self.offer = url, rate, offer
        self.stop_event = threading.Event()
        self.accepted = self.refused = 0

    def run(self) -> None:
        conn, i, start = None, 0, time.monotonic()
        while not self.stop_event.is_set():
            target = start + i / self.rate
            if (wait := target - time.monotonic()) > 0:
                time.sleep(wait)
            i += 1
            try:
                if conn is None:
                    conn = connect(self.url)
                self.offer(conn.cursor(), i)
                self.accepted += 1
            except Exception:
                self.refused += 1
                conn = None
        if conn is not None:
            conn.close()


class Pressure:
    """One scenario's pressure: :meth:`begin` and :meth:`end` around the pressure phase."""

    def __init__(self, kind: str, url: str, cluster: Cluster, workers: Any, args,
                 tables: tuple[str, ...] = ("job_executions", "job_events", "fair_queue")
                 ) -> None:
        self.kind, self.url, self.cluster, self.workers, self.args = kind, url, cluster, \
            workers, args
        #: The queue's tables the REPEATABLE READ readers scan.
        self.tables = tables
        self.conns: list[Any] = []
        self.stop_event = threading.Event()
        self.threads: list[threading.Thread] = []
        self.notes: dict[str, Any] = {}
        #: When the pressure was lifted: the end of the phase, or for a restart, when the
        #: server accepted connections again (time to recover counts from there).
        self.released_at: float | None = None

    def _loop(self, every: float, fn: Callable[[], None], first: float | None = None) -> None:
        def run() -> None:
            delay = every if first is None else first
            while not self.stop_event.wait(delay):
                delay = every
                try:
                    fn()
                except Exception as exc:
                    self.notes["errors"] = self.notes.get("errors", 0) + 1
                    self.notes["last_error"] = str(exc).splitlines()[0][:200]
        t = threading.Thread(target=run, daemon=True)
        t.start()
        self.threads.append(t)

    def begin(self) -> None:
        if self.kind == "idle_tx":
            conn = connect(self.url, autocommit=False)
            conn.cursor().execute("SELECT txid_current()")
            self.conns.append(conn)
        elif self.kind == "rr_readers":
            for _ in range(4):
                conn = connect(self.url, autocommit=False)
                conn.set_session(isolation_level="REPEATABLE READ")
                self.conns.append(conn)

                def scan(conn=conn) -> None:
                    cur = conn.cursor()
                    for table in self.tables:
                        cur.execute(f"SELECT count(*) FROM {table}")
                self._loop(0.2, scan)
        elif self.kind == "terminate":
            killer = connect(self.url)
            self.conns.append(killer)
            self.notes["terminated"] = 0

            def terminate() -> None:
                cur = killer.cursor()
                cur.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                            "WHERE datname = current_database() AND pid <> pg_backend_pid() "
                            "AND backend_type = 'client backend' AND application_name <> %s "
                            "ORDER BY random() LIMIT 1", (OWN,))
                self.notes["terminated"] += cur.rowcount
            self._loop(0.5, terminate)
        elif self.kind == "idle_conns":
            taken = 0
            for _ in range(self.args.idle_connections):
                try:
                    self.conns.append(connect(self.url))
                    taken += 1
                except Exception:
                    break
            self.notes["taken"] = taken
        elif self.kind == "restart":
            t0 = time.monotonic()
            self.cluster.stop("fast")
            time.sleep(min(5.0, self.args.pressure_seconds / 2))
            self.cluster.start()
            self.notes["down_s"] = round(time.monotonic() - t0, 2)
            self.released_at = time.time()  # accepting connections again
        elif self.kind == "worker_kill":
            self.notes["killed"] = 0

            def kill() -> None:
                i = random.randrange(len(self.workers.procs))
                proc = self.workers.procs[i]
                os.killpg(proc.popen.pid, signal.SIGKILL)
                proc.popen.wait(10)
                self.workers.procs[i] = self.workers.start(self.workers.names[i])
                self.notes["killed"] += 1
            self._loop(self.args.kill_every, kill, first=1.0)

    def end(self) -> None:
        if self.released_at is None:
            self.released_at = time.time()
        self.stop_event.set()
        for t in self.threads:
            t.join(10)
        for conn in self.conns:
            try:
                conn.rollback()
                conn.close()
            except Exception:
                pass
        self.conns.clear()


class Workers:
    """``jobq run``'s worker set-up and beat, with a way to start one again."""

    def __init__(self) -> None:
        from app.ops.workers import WORKERS
        from bench.common import celery_beat

        self.beat = celery_beat(wait=True)
        self.names = list(WORKERS)
        self.procs = [self.start(name) for name in self.names]

    def start(self, name: str):
        from app.ops.workers import worker_args
        from bench.common import celery_worker

        args = worker_args(name)
        i = args.index("-n")
        return celery_worker("app", name, *args[:i], *args[i + 2:])

    def stop(self) -> None:
        from bench.common import stop_all

        stop_all([*self.procs, self.beat])
