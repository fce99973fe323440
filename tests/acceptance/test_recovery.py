"""Lost messages and lost runs, with real processes: a Redis flush after publish, a prefork
child killed with SIGKILL mid-run, a whole worker killed. Each job completes exactly once and
its events show every attempt, the lost ones included.
"""

from __future__ import annotations

import os
import signal
import time

import pytest
import redis

from app import submit
from app.beat import sweep as maintenance
from app.run import lease
from app.store import db
from tests.conftest import KEY_PREFIX, REDIS_URL
from tests.fixtures import event_kinds, job_events, job_row, sql, wait_for, wait_for_status

pytestmark = pytest.mark.slow

LOST_AND_RETRIED = [(0, "created"), (1, "started"), (1, "lost"), (2, "started"), (2, "completed")]


def submit_job(tenant: str, intent: str, params: dict) -> str:
    with db.session() as session:
        job_id = submit(session, tenant_id=tenant, intent_key=intent, intent_params=params)
        session.commit()
    return job_id


def flush_this_runs_redis_keys() -> int:
    """What a Redis restart without persistence does, to this test run's keys only."""
    client = redis.Redis.from_url(REDIS_URL)
    keys = list(client.scan_iter(match=KEY_PREFIX + "*", count=1000))
    if keys:
        client.delete(*keys)
    return len(keys)


def lease_pid(job_id: str) -> int:
    owner = wait_for_status(job_id, "processing")["lease_owner"]
    return lease.owner_pid(owner)


def test_job_published_then_lost_in_a_redis_flush_still_completes_once(
        tenant, start_worker_process, start_beat_process):
    job_id = submit_job(tenant, "system.exec.echo", {"survives": "flush"})
    published_at = job_row(job_id)["published_at"]
    assert published_at is not None  # handed to the broker, which then forgets it

    assert flush_this_runs_redis_keys() > 0
    # Far longer than the test waits: the sweep must see that Redis lost its data, not that
    # the message is old.
    patient = {"JOBQ_REPUBLISH_AFTER": "600"}
    start_worker_process("-P", "threads", "-c", "2", env=patient)
    start_beat_process(env=patient)

    row = wait_for_status(job_id, "completed", timeout=20)
    assert row["result"] == {"survives": "flush"}
    assert row["published_at"] > published_at  # the sweep sent it again
    assert event_kinds(job_id) == [(0, "created"), (1, "started"), (1, "completed")]


def test_sweep_republishes_at_once_only_what_a_lost_redis_held(tenant):
    maintenance.sweep_once(republish_after=3600)  # the broker's epoch marker exists from here
    held = submit_job(tenant, "system.exec.echo", {})
    first = job_row(held)["published_at"]

    maintenance.sweep_once(republish_after=3600)
    assert job_row(held)["published_at"] == first  # Redis still holds its message

    flush_this_runs_redis_keys()
    maintenance.sweep_once(republish_after=3600)
    again = job_row(held)["published_at"]
    assert again > first  # published into a Redis that lost it: sent again at once

    maintenance.sweep_once(republish_after=3600)
    assert job_row(held)["published_at"] == again  # and only once


def test_prefork_child_killed_mid_run_completes_once_with_the_lost_attempt(
        tenant, start_worker_process):
    worker = start_worker_process("-P", "prefork", "-c", "2")
    job_id = submit_job(tenant, "system.exec.sleep", {"seconds": 3})
    pid = lease_pid(job_id)
    assert pid in worker.child_pids()

    os.kill(pid, signal.SIGKILL)

    row = wait_for_status(job_id, "completed", timeout=30)
    assert row["retry_count"] == 1 and row["result"] == {"slept": 3.0}
    assert event_kinds(job_id) == LOST_AND_RETRIED
    lost = next(e for e in job_events(job_id) if e["kind"] == "lost")
    assert "worker lost" in lost["error"] and str(pid) in lost["error"]


def test_whole_worker_killed_mid_run_is_recovered_by_beat(
        tenant, start_worker_process, start_beat_process):
    doomed = start_worker_process("-P", "prefork", "-c", "1")
    job_id = submit_job(tenant, "system.exec.sleep", {"seconds": 2})
    lease_pid(job_id)

    os.killpg(doomed.pid, signal.SIGKILL)  # the worker and its pool, as a machine loss would
    doomed.proc.wait(10)
    wait_for(lambda: not doomed.child_pids(), timeout=10, message="the pool to be gone")
    rescuer = start_worker_process("-P", "prefork", "-c", "1")
    start_beat_process()

    row = wait_for_status(job_id, "completed", timeout=40)
    assert row["retry_count"] == 1 and row["error_message"] is None
    assert event_kinds(job_id) == LOST_AND_RETRIED
    by_kind = {e["kind"]: e for e in job_events(job_id)}
    assert by_kind["lost"]["worker"] == doomed.name and "worker lost" in by_kind["lost"]["error"]
    assert by_kind["completed"]["worker"] == rescuer.name


def lost_event_delay(job_id: str, since: float) -> float:
    """Seconds from ``since`` (epoch) to the job's ``lost`` event."""
    lost = next(e for e in job_events(job_id) if e["kind"] == "lost")
    return lost["at"].timestamp() - since


def test_dead_worker_is_known_dead_at_once_not_after_its_30_second_lease(
        tenant, start_worker_process, start_beat_process):
    # Production's lease and recovery interval, not the tests' short ones.
    production = {"JOBQ_LEASE_SECONDS": "30", "JOBQ_RECOVER_INTERVAL": "5"}
    workers = [start_worker_process("-P", "prefork", "-c", "1", env=production)
               for _ in range(2)]
    start_beat_process(env=production)
    job_id = submit_job(tenant, "system.exec.sleep", {"seconds": 20})
    pid = lease_pid(job_id)
    doomed = next(w for w in workers if pid in w.child_pids())
    assert ":l" in job_row(job_id)["lease_owner"]  # the run's owner holds a liveness lock

    os.killpg(doomed.pid, signal.SIGKILL)
    killed_at = time.time()

    row = wait_for_status(job_id, "completed", timeout=60)
    detected = lost_event_delay(job_id, killed_at)
    print(f"\n[recovery] dead worker detected {detected:.1f}s after SIGKILL (lease 30 s), "
          f"job completed {row['completed_at'].timestamp() - killed_at:.1f}s after it")
    assert detected <= 10.0
    assert event_kinds(job_id) == LOST_AND_RETRIED


def test_a_run_blocked_in_c_with_the_gil_held_keeps_its_job_past_its_lease(
        tenant, start_worker_process, start_beat_process):
    start_worker_process("-P", "prefork", "-c", "1")
    start_beat_process()  # recovery every 0.5 s, leases of 3 s
    job_id = submit_job(tenant, "test.exec.hold_the_gil", {"seconds": 8})
    wait_for_status(job_id, "processing")

    # Its lease lapses: the process cannot renew it while the call holds the GIL.
    lapsed = wait_for(lambda: sql(
        "SELECT lease_expires_at < now() - interval '1 second' FROM job_executions "
        "WHERE id = CAST(:id AS uuid) AND status = 'processing'", id=job_id)[0][0] or None,
        timeout=10, interval=0.2, message="the run's lease to lapse")
    assert lapsed

    row = wait_for_status(job_id, "completed", timeout=30)
    assert row["retry_count"] == 0 and row["result"]["held"] == 8
    assert event_kinds(job_id) == [(0, "created"), (1, "started"), (1, "completed")]
