"""``submit`` joins the caller's transaction: its message goes to the broker only once that
commits, and a rollback leaves neither a row nor a message. No worker runs in this module, so
the broker's queue shows exactly what was published."""

from __future__ import annotations

from app.intake.submit import submit
from app.store import db
from tests.fixtures import job_row, queued_job_ids


def test_submit_in_a_rolled_back_transaction_writes_and_publishes_nothing(tenant):
    with db.session() as session:
        lost = submit(session, tenant_id=tenant, intent_key="system.exec.echo",
                      intent_params={"lost": True})
        session.rollback()
    with db.session() as session:  # the same path, committed: what publishing looks like
        kept = submit(session, tenant_id=tenant, intent_key="system.exec.echo",
                      intent_params={"kept": True})
        session.commit()

    queued = queued_job_ids("realtime")
    assert kept in queued
    assert lost not in queued
    assert job_row(lost) is None


def test_submit_publishes_after_the_callers_commit(tenant):
    with db.session() as session:
        job_id = submit(session, tenant_id=tenant, intent_key="system.exec.echo",
                        intent_params={"order": 7})
        assert job_id not in queued_job_ids("realtime")  # not while the caller can roll back
        session.commit()

    assert job_id in queued_job_ids("realtime")
    row = job_row(job_id)
    assert (row["status"], row["source"], row["intent_params"]) == ("pending", "submit",
                                                                   {"order": 7})
    assert row["published_at"] is not None
