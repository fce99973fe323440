"""Approval before execution from Python and the CLI: a job asked for with ``requires_approval``
(or of an intent declared so) waits in ``awaiting_approval``; approve runs it, reject cancels
it, expiry cancels it; each decision is in its history with who made it."""

from __future__ import annotations

import pytest

from app import approve, reject, submit
from app.beat.approvals import expire_once
from app.store import db
from tests.commands import jobq
from tests.fixtures import event_kinds, job_events, job_row, queued_job_ids, sql, wait_for_status


def _ask(tenant: str, key: str = "system.exec.echo", **kw) -> str:
    with db.session() as session:
        job_id = submit(session, tenant_id=tenant, intent_key=key, intent_params={"x": 1}, **kw)
        session.commit()
    return job_id


def test_an_unapproved_job_is_not_published_until_approved_from_python(tenant):
    job_id = _ask(tenant, requires_approval=True, requested_by="svc:billing")
    row = job_row(job_id)
    assert (row["status"], row["published_at"], row["requested_by"]) == (
        "awaiting_approval", None, "svc:billing")
    assert job_id not in queued_job_ids("realtime")
    approved = approve(job_id, by="svc:teacher", note="ok")
    assert approved is not None and approved.publish
    assert job_id in queued_job_ids("realtime")  # no worker here: the message waits
    assert job_row(job_id)["status"] == "pending"
    assert approve(job_id, by="svc:teacher") is None  # once only
    events = {e["kind"]: e["detail"] for e in job_events(job_id)}
    assert events["created"]["by"] == "svc:billing" and events["created"]["awaiting_approval"]
    assert events["approved"] == {"by": "svc:teacher", "note": "ok"}


def test_an_intent_declared_so_always_waits_and_reject_cancels_it(tenant):
    job_id = _ask(tenant, key="test.exec.approved_echo")
    assert job_row(job_id)["status"] == "awaiting_approval"
    assert reject(job_id, by="svc:teacher", reason="not now")
    row = job_row(job_id)
    assert (row["status"], row["error_message"]) == ("cancelled", "not now")
    assert not reject(job_id, by="svc:teacher")


def test_expired_approvals_are_cancelled_with_an_expired_event(tenant):
    job_id = _ask(tenant, requires_approval=True)
    assert job_id not in expire_once()
    sql("UPDATE job_executions SET approval_expires_at = now() - interval '1 minute' "
        "WHERE id = CAST(:id AS uuid)", id=job_id)
    assert job_id in expire_once()
    row = job_row(job_id)
    assert row["status"] == "cancelled" and row["error_message"].startswith("approval expired")
    assert [k for _, k in event_kinds(job_id)] == ["created", "expired"]


def test_deleting_a_tenant_fails_its_unapproved_jobs(tenant):
    job_id = _ask(tenant, requires_approval=True)
    result = jobq("tenants", "delete", tenant, "--yes")
    assert result.returncode == 0, result.stderr
    row = job_row(job_id)
    assert row["status"] == "failed" and "deleted" in row["error_message"]


@pytest.mark.usefixtures("worker")
def test_the_cli_approves_and_rejects_and_shows_the_state(tenant):
    waiting = _ask(tenant, requires_approval=True)
    listed = jobq("jobs", "--tenant", tenant, "--status", "awaiting_approval")
    assert listed.returncode == 0 and waiting[:8] in listed.stdout
    assert "awaiting approval" in listed.stdout
    approved = jobq("approve", waiting[:8], "--note", "확인")
    assert approved.returncode == 0 and "approved" in approved.stdout
    wait_for_status(waiting, "completed")
    shown = jobq("job", waiting)
    assert "approved" in shown.stdout and "cli:" in shown.stdout
    again = jobq("approve", waiting)
    assert again.returncode == 1 and "not awaiting approval" in again.stderr
    other = _ask(tenant, requires_approval=True)
    rejected = jobq("reject", other, "--reason", "중복")
    assert rejected.returncode == 0 and job_row(other)["status"] == "cancelled"
    dispatched = jobq("dispatch", "system.exec.echo", "--tenant", tenant, "--requires-approval")
    assert dispatched.returncode == 0 and "awaits approval" in dispatched.stderr
    assert job_row(dispatched.stdout.strip())["status"] == "awaiting_approval"
