"""``python -m bench pressure``'s two systems under the same scenarios: jobq (``jobq run``'s
workers and beat, echo jobs inserted with plain SQL) and Procrastinate, the Python peer of the
public postgresql-job-queue-benchmarking harness (a database of its own in the same cluster,
its schema as ``procrastinate schema --apply`` writes it, two worker processes of one job at a
time as jobq's two realtime ones, a no-op task, jobs deferred with its own SQL function).

Each system says how one job is offered, which tables are hot, and how its jobs' insert, start
and end times are read: pickup is insert -> start for both (jobq's ``created_at`` and
``executed_at``; Procrastinate's ``deferred`` and ``started`` events).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

#: The Procrastinate app the peer's workers run (``--app``): one no-op task on one queue.
APP_MODULE = "bench.pressure_peer"
QUEUE = "echo"


def _procrastinate_app():
    import os

    from procrastinate import App, PsycopgConnector

    app = App(connector=PsycopgConnector(conninfo=os.environ.get("PROCRASTINATE_DSN", "")))

    @app.task(name="echo", queue=QUEUE)
    def echo(**kwargs: Any) -> None:
        return None

    return app


try:
    app = _procrastinate_app()
except ImportError:  # not installed: only jobq is benchmarked (``--systems jobq``)
    app = None


@dataclass
class System:
    name: str
    url: str
    #: Runs one job's insert on a cursor (``i``: the job's number).
    offer: Callable[[Any, int], None]
    #: The tables every job writes (their dead tuples are sampled).
    hot_tables: tuple[str, ...]
    #: Rows of (inserted, started, finished as epoch seconds, finished well, handed to the
    #: broker: jobq's published_at; None where there is no such step).
    jobs_sql: str
    #: How many jobs started more than once.
    twice_sql: str
    #: How many jobs have finished.
    done_sql: str
    #: Empties the system's jobs between scenarios.
    reset: Callable[[], None]
    #: Starts its workers (an object with ``procs``, ``names``, ``start(name)``, ``stop()``).
    start_workers: Callable[[], Any]


JOBQ_JOBS = ("SELECT extract(epoch FROM created_at), extract(epoch FROM executed_at), "
             "extract(epoch FROM completed_at), status = 'completed', "
             "extract(epoch FROM published_at) FROM job_executions")
JOBQ_TWICE = ("SELECT count(*) FROM (SELECT job_id FROM job_events WHERE kind = 'started' "
              "GROUP BY job_id, attempt HAVING count(*) > 1) d")
JOBQ_DONE = ("SELECT count(*) FROM job_executions "
             "WHERE status IN ('completed', 'failed', 'cancelled')")

PEER_JOBS = """
    SELECT extract(epoch FROM min(e.at) FILTER (WHERE e.type = 'deferred')),
           extract(epoch FROM min(e.at) FILTER (WHERE e.type = 'started')),
           extract(epoch FROM max(e.at) FILTER (WHERE e.type IN ('succeeded', 'failed'))),
           j.status = 'succeeded', NULL
      FROM procrastinate_jobs j JOIN procrastinate_events e ON e.job_id = j.id
     GROUP BY j.id, j.status
"""
PEER_TWICE = ("SELECT count(*) FROM (SELECT job_id FROM procrastinate_events "
              "WHERE type = 'started' GROUP BY job_id HAVING count(*) > 1) d")
PEER_DONE = ("SELECT count(*) FROM procrastinate_jobs "
             "WHERE status IN ('succeeded', 'failed', 'cancelled', 'aborted')")
PEER_DEFER = ("SELECT procrastinate_defer_jobs_v1(ARRAY[ROW(%s, 'echo', 0, NULL, NULL, "
              "'{}'::jsonb, NULL)::procrastinate_job_to_defer_v1])")


class PeerWorkers:
    """Procrastinate's workers: ``procrastinate --app bench.pressure_peer.app worker`` twice,
    one job at a time each, with a way to start one again (as ``Workers`` for jobq)."""

    def __init__(self, dsn: str, processes: int = 2) -> None:
        self.dsn = dsn
        self.names = [f"procrastinate-{i}" for i in range(1, processes + 1)]
        self.procs = [self.start(name) for name in self.names]

    def start(self, name: str):
        from bench.common import start_process

        return start_process(name, [sys.executable, "-m", "procrastinate", "--app",
                                    f"{APP_MODULE}.app", "worker", "--name", name,
                                    "--queues", QUEUE, "--concurrency", "1"],
                             {"PROCRASTINATE_DSN": self.dsn})

    def stop(self) -> None:
        for proc in self.procs:
            proc.stop()


def jobq(url: str, tenants: list[str], queue: str) -> System:
    from bench.common import reset_jobs
    from bench.pressure_parts import ECHO, Workers

    def offer(cur, i: int) -> None:
        cur.execute("INSERT INTO job_executions (tenant_id, intent_key, intent_params, queue) "
                    "VALUES (%s, %s, '{}', %s)", (tenants[i % len(tenants)], ECHO, queue))

    return System("jobq", url, offer, ("job_executions", "fair_queue", "job_events",
                                       "fair_clock"),
                  JOBQ_JOBS, JOBQ_TWICE, JOBQ_DONE, reset_jobs, Workers)


def procrastinate(cluster_url: str) -> System:
    """Procrastinate in a database of its own on the benchmark's cluster, schema applied."""
    from procrastinate.schema import SchemaManager

    from bench.pressure_parts import connect

    admin = connect(cluster_url)
    admin.cursor().execute("DROP DATABASE IF EXISTS procrastinate_bench")
    admin.cursor().execute("CREATE DATABASE procrastinate_bench")
    admin.close()
    url = cluster_url.rsplit("/", 1)[0] + "/procrastinate_bench"
    conn = connect(url)
    conn.cursor().execute(SchemaManager.get_schema())
    conn.close()

    def offer(cur, i: int) -> None:
        cur.execute(PEER_DEFER, (QUEUE,))

    def reset() -> None:
        c = connect(url)
        c.cursor().execute("TRUNCATE procrastinate_events, procrastinate_periodic_defers, "
                           "procrastinate_jobs CASCADE")
        c.close()

    return System("procrastinate", url, offer, ("procrastinate_jobs", "procrastinate_events"),
                  PEER_JOBS, PEER_TWICE, PEER_DONE, reset, lambda: PeerWorkers(url))
