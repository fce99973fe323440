"""A worker killed while it holds reserved messages: the jobs it had taken from the broker but
not started run elsewhere within seconds, not after the sweep's ``JOBQ_REPUBLISH_AFTER``, and
every job of the backlog completes exactly once.

The sweep is kept out of it (``JOBQ_REPUBLISH_AFTER`` far longer than the test); beat runs for
lost-run recovery only (the job the killed worker had going).
"""

from __future__ import annotations

import json
import os
import signal
import time

import pytest

from app import Request, submit_many
from app.broker import client as broker_client
from app.core.settings import settings
from app.store import db
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
    return {json.loads(entry)[0]["headers"]["id"] for entry in raw}


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


@pytest.mark.parametrize("pool", [("-P", "solo"), ("-P", "prefork", "-c", "2")],
                         ids=["solo", "prefork"])
def test_jobs_a_killed_worker_held_start_within_seconds_without_the_sweep(
        tenant, start_worker_process, start_beat_process, pool):
    # The doomed worker reserves four messages per process ahead of the one it runs; a window
    # of at least 12 lets it fill them.
    holding = {**NO_SWEEP, "JOBQ_PREFETCH_MULTIPLIER": "4", "JOBQ_FAIR_WINDOW_MIN": "12"}
    doomed = start_worker_process(*pool, queues="realtime", env=holding)
    start_worker_process("-P", "solo", queues="realtime", env={**NO_SWEEP,
                                                               "JOBQ_FAIR_WINDOW_MIN": "12"})
    start_beat_process(env=NO_SWEEP)
    with db.session() as session:
        ids = submit_many(session, [Request(tenant, "system.exec.sleep", {"seconds": 0.2})
                                    for _ in range(60)])
        session.commit()

    # Pending rows whose message a worker holds: the rescuer (one message, the one it runs)
    # holds none of them for long, so these are what the doomed worker reserved.
    wait_for(lambda: len(pending(unacked_job_ids())) >= 3, timeout=20,
             message="the doomed worker to hold reserved messages")
    os.killpg(doomed.pid, signal.SIGKILL)  # main process and pool, as a lost machine would
    killed_at = time.time()
    doomed.proc.wait(10)
    held = pending(unacked_job_ids())
    assert len(held) >= 2, "the killed worker held no reserved message"

    def every_job_completed() -> bool:
        return sql("SELECT count(*) FROM job_executions WHERE id = ANY(CAST(:ids AS uuid[])) "
                   "AND status = 'completed'", ids=ids)[0][0] == len(ids)

    try:
        wait_for(lambda: len(first_starts(held)) == len(held), timeout=30,
                 message="the jobs the killed worker held to start")
    finally:
        starts = first_starts(held)
        late = [round(starts[i] - killed_at, 1) if i in starts else None for i in sorted(held)]
        print(f"\n[dead holder, {pool[1]}] {len(held)} held job(s) started at {late} s "
              "after the kill (None: not started)")
    assert max(starts.values()) - killed_at <= RECOVERY_SECONDS

    wait_for(every_job_completed, timeout=60, message="every job to complete")
    completions = sql("SELECT job_id::text, count(*) FROM job_events WHERE kind = 'completed' "
                      "AND job_id = ANY(CAST(:ids AS uuid[])) GROUP BY job_id", ids=ids)
    assert len(completions) == len(ids) and all(n == 1 for _, n in completions)
