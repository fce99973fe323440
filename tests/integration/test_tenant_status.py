"""A tenant's status decides at the claim whether its job runs, with real worker and beat
processes: a suspended tenant's job already on the broker is held (pending, a ``held`` event)
and runs once the tenant is resumed; a deleted tenant's job fails with the reason. The sweep
neither fails nor publishes a held job while its tenant is suspended.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from app.beat.sweep import sweep_once
from tests.commands import jobq, one_error_line
from tests.fixtures import (
    event_kinds,
    job_events,
    job_row,
    make_tenant,
    spawn_beat,
    spawn_worker,
    sql,
    wait_for,
    wait_for_status,
)

pytestmark = pytest.mark.slow


def insert_by_sql(tenant: str, params: str = '{"n": 1}') -> str:
    return sql("INSERT INTO job_executions (tenant_id, intent_key, intent_params) "
               "VALUES (:t, 'system.exec.echo', CAST(:p AS jsonb)) RETURNING id::text",
               t=tenant, p=params)[0][0]


def published_by_the_sweep(job_id: str) -> None:
    """The sweep routes the row to its queue and the queue's feeder publishes it, as a worker's
    would: the message is on the broker (no worker is running yet to take it)."""
    from app.run.feeder import Window, feed_once

    def published() -> bool:
        sweep_once()
        feed_once("realtime", Window(4, 4, 64))
        return job_row(job_id)["published_at"] is not None

    wait_for(published, 10, message="the sweep to route the row and the feeder to publish it")


def tenant_events(tenant: str) -> list[tuple[str, str, str]]:
    return [(kind, was, by.split(":")[0]) for kind, was, by in sql(
        "SELECT kind, was, by FROM tenant_events WHERE tenant_id = :t ORDER BY at, id",
        t=tenant)]


def test_a_job_whose_tenant_is_suspended_after_publish_is_held_and_runs_after_resume(
        tmp_path: Path):
    tenant = make_tenant()
    job = insert_by_sql(tenant)
    published_by_the_sweep(job)

    suspended = jobq("tenants", "suspend", tenant)
    assert suspended.returncode == 0, suspended.stderr
    assert "its 1 pending job(s) are held until it is resumed" in suspended.stdout

    worker = spawn_worker(tmp_path, "-P", "solo")
    beat = spawn_beat(tmp_path)
    try:
        wait_for(lambda: (0, "held") in event_kinds(job), 20,
                 message="the worker to take the message and hold the job")
        held = job_row(job)
        assert (held["status"], held["executed_at"], held["published_at"]) == (
            "pending", None, None)
        event = job_events(job)[-1]
        assert event["error"] == f"tenant {tenant} is suspended; its jobs wait until it is resumed"
        assert event["detail"] == {"tenant_status": "suspended"} and event["worker"]

        # The sweep (beat's, and one run here to see it done) leaves the held job alone: not
        # failed, not published.
        for _ in range(2):
            sweep_once()
        assert job_row(job)["published_at"] is None
        assert event_kinds(job) == [(0, "created"), (0, "held")]

        resumed = jobq("tenants", "resume", tenant)
        assert resumed.returncode == 0, resumed.stderr
        assert "its 1 held job(s) run again" in resumed.stdout
        row = wait_for_status(job, "completed", timeout=20)
    finally:
        beat.stop()
        worker.stop()
    assert row["result"] == {"n": 1}
    assert event_kinds(job) == [(0, "created"), (0, "held"), (1, "started"), (1, "completed")]
    assert tenant_events(tenant) == [("suspended", "active", "cli"), ("resumed", "suspended", "cli")]


def test_a_job_whose_tenant_is_deleted_after_publish_fails_with_the_reason(tmp_path: Path):
    tenant = make_tenant()
    job = insert_by_sql(tenant)
    published_by_the_sweep(job)
    # Deleted by hand, so the job is still pending when its message reaches a worker.
    sql("UPDATE tenants SET status = 'deleted' WHERE id = :t", t=tenant)

    worker = spawn_worker(tmp_path, "-P", "solo")
    try:
        row = wait_for_status(job, "failed", timeout=20)
    finally:
        worker.stop()
    assert row["error_message"] == f"tenant {tenant} is deleted; its jobs are refused"
    assert row["executed_at"] is None
    assert event_kinds(job) == [(0, "created"), (0, "refused")]
    assert job_events(job)[-1]["worker"]


def test_deleting_a_tenant_fails_its_pending_jobs_at_once_and_cannot_be_undone():
    tenant = make_tenant()
    jobs = [insert_by_sql(tenant, json.dumps({"n": i})) for i in range(2)]

    unconfirmed = jobq("tenants", "delete", tenant)  # no terminal to say yes in
    assert unconfirmed.returncode == 2
    assert "deleting a tenant needs a yes" in one_error_line(unconfirmed)
    assert job_row(jobs[0])["status"] == "pending"

    deleted = jobq("tenants", "delete", tenant, "--yes")
    assert deleted.returncode == 0, deleted.stderr
    assert "is now deleted; 2 pending job(s) failed" in deleted.stdout
    for job in jobs:
        row = job_row(job)
        assert row["status"] == "failed"
        assert row["error_message"] == f"tenant {tenant} is deleted; its jobs are refused"
        assert job_events(job)[-1]["kind"] == "refused"
        assert job_events(job)[-1]["detail"]["by"].startswith("cli:")
    assert tenant_events(tenant) == [("deleted", "active", "cli")]

    for command in ("resume", "suspend"):
        refused = jobq("tenants", command, tenant)
        assert refused.returncode == 1
        assert "a deleted tenant cannot be" in one_error_line(refused)
    dispatch = jobq("dispatch", "system.exec.echo", "-t", tenant)
    assert dispatch.returncode == 2
    assert f"tenant {tenant} is deleted; its jobs are refused" in one_error_line(dispatch)
    listed = json.loads(jobq("tenants", "--status", "deleted", "--json").stdout)
    assert tenant in [t["id"] for t in listed]
