"""A worker killed under a backlog stalls nothing: the jobs it had taken from the broker but not
started (a prefork worker's reserved messages), and the jobs its feeder stamped published but
never sent, run elsewhere within seconds, not after the sweep's ``JOBQ_REPUBLISH_AFTER``; and
every job of the backlog completes exactly once.

The sweep is kept out of it (``JOBQ_REPUBLISH_AFTER`` far longer than the test); beat runs for
lost-run recovery only (the job the killed worker had going), run by the surviving worker.
"""

from __future__ import annotations

import json
import os
import signal
import time
import uuid

import pytest
from sqlalchemy import text

from app import Request, submit_many
from app.broker import client as broker_client
from app.core.settings import settings
from app.store import db, jobstore
from tests.fixtures import sql, wait_for

pytestmark = pytest.mark.slow

#: Longer than the test: only what notices a dead holder can send its messages again.
NO_SWEEP = {"JOBQ_REPUBLISH_AFTER": "600"}
#: The killed worker's held jobs must start within this many seconds of the kill.
RECOVERY_SECONDS = 10.0


def unacked_job_ids() -> set[str]:
    """The jobs of the messages workers hold (reserved or running, not acknowledged), read
    straight from kombu's ``unacked`` hash."""
    raw = broker_client.client().hvals(settings.redis_key_prefix + "unacked")
    ids = {json.loads(entry)[0]["headers"]["id"] for entry in raw}
    return {i for i in ids if _is_uuid(i)}  # a client's own task id is no job's


def _is_uuid(value: str) -> bool:
    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return True


def pending(ids: set[str]) -> set[str]:
    if not ids:
        return set()
    return {r[0] for r in sql("SELECT id::text FROM job_executions WHERE status = 'pending' "
                              "AND id = ANY(CAST(:ids AS uuid[]))", ids=sorted(ids))}


def first_starts(ids: set[str]) -> dict[str, float]:
    """Job id -> epoch seconds of its first ``started`` event (jobs started so far)."""
    rows = sql("SELECT job_id::text, min(at) FROM job_events WHERE kind = 'started' "
               "AND job_id = ANY(CAST(:ids AS uuid[])) GROUP BY job_id", ids=sorted(ids))
    return {r[0]: r[1].timestamp() for r in rows}


def submit_sleeps(tenant: str, n: int, seconds: float) -> list[str]:
    with db.session() as session:
        ids = submit_many(session, [Request(tenant, "system.exec.sleep", {"seconds": seconds})
                                    for _ in range(n)])
        session.commit()
    return ids


def assert_each_completed_once(ids: list[str]) -> None:
    def every_job_completed() -> bool:
        return sql("SELECT count(*) FROM job_executions WHERE id = ANY(CAST(:ids AS uuid[])) "
                   "AND status = 'completed'", ids=ids)[0][0] == len(ids)

    wait_for(every_job_completed, timeout=60, message="every job to complete")
    completions = sql("SELECT job_id::text, count(*) FROM job_events WHERE kind = 'completed' "
                      "AND job_id = ANY(CAST(:ids AS uuid[])) GROUP BY job_id", ids=ids)
    assert len(completions) == len(ids) and all(n == 1 for _, n in completions)


def assert_started_soon_after(killed_at: float, jobs: set[str], what: str,
                              backlog: list[str]) -> None:
    try:
        wait_for(lambda: len(first_starts(jobs)) == len(jobs), timeout=30,
                 message=f"the jobs {what} to start")
    finally:
        starts = first_starts(jobs)
        late = [round(starts[i] - killed_at, 1) if i in starts else None for i in sorted(jobs)]
        begun = first_starts(set(backlog)).values()
        print(f"\n[{what}] {len(jobs)} job(s) started at {late} s after the kill "
              f"(None: not within 30 s); of the backlog of {len(backlog)}, "
              f"{sum(1 for t in begun if t > killed_at)} started after the kill, "
              f"{len(backlog) - len(begun)} not yet")
    assert max(starts.values()) - killed_at <= RECOVERY_SECONDS


def test_jobs_a_killed_prefork_worker_had_reserved_start_within_seconds_without_the_sweep(
        tenant, start_worker_process, start_beat_process):
    # Each of the doomed worker's two pool processes has four messages reserved ahead; a
    # window of at least 12 lets it fill them.
    holding = {**NO_SWEEP, "JOBQ_PREFETCH_MULTIPLIER": "4", "JOBQ_FAIR_WINDOW_MIN": "12"}
    doomed = start_worker_process("-P", "prefork", "-c", "2", queues="realtime", env=holding)
    start_worker_process("-P", "solo", queues="maintenance,realtime",
                         env={**NO_SWEEP, "JOBQ_FAIR_WINDOW_MIN": "12"})
    start_beat_process(env=NO_SWEEP)  # lost-run recovery, for the runs the worker had going
    ids = submit_sleeps(tenant, 60, 0.2)

    # Pending rows whose message a worker holds: the solo rescuer holds one message, the one it
    # runs, so these are what the doomed worker reserved.
    wait_for(lambda: len(pending(unacked_job_ids())) >= 3, timeout=20,
             message="the doomed worker to hold reserved messages")
    os.killpg(doomed.pid, signal.SIGKILL)  # main process and pool, as a lost machine would
    killed_at = time.time()
    doomed.proc.wait(10)
    held = pending(unacked_job_ids())
    assert len(held) >= 2, "the killed worker held no reserved message"

    assert_started_soon_after(killed_at, held, "a killed prefork worker held", ids)
    assert_each_completed_once(ids)


def test_a_solo_feeder_killed_between_stamping_and_sending_stalls_nothing(
        tenant, start_worker_process, start_beat_process):
    # A solo worker reserves nothing ahead, but its feeder may die between stamping a window's
    # jobs published and sending them: rows handed off that no broker has, which the window
    # counts as in flight (more than its floor of two here: the queue fed nothing more).
    doomed = start_worker_process("-P", "solo", queues="realtime", env=NO_SWEEP)
    start_worker_process("-P", "solo", queues="maintenance,realtime", env=NO_SWEEP)
    start_beat_process(env=NO_SWEEP)
    ids = submit_sleeps(tenant, 60, 0.1)
    wait_for(lambda: first_starts(set(ids)), timeout=20, message="the backlog to start")

    # What the doomed worker's feeder left as it died: its last look stamped, nothing sent.
    with db.engine().begin() as conn:
        stamped = [r[0] for r in conn.execute(text(
            "SELECT id::text FROM job_executions WHERE id = ANY(CAST(:ids AS uuid[])) "
            "AND status = 'pending' AND published_at IS NULL LIMIT 6"), {"ids": ids})]
        jobstore.mark_published(conn, stamped, queue="realtime")
    os.killpg(doomed.pid, signal.SIGKILL)
    killed_at = time.time()
    doomed.proc.wait(10)
    assert len(stamped) == 6

    assert_started_soon_after(killed_at, set(stamped), "a killed feeder stamped", ids)
    assert_each_completed_once(ids)
