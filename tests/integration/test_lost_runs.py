"""A run whose worker died goes back to pending in its old place: the feeder hands it out before
the jobs its academy asked for while it ran, not behind them (app.store.jobstore.lost)."""

from __future__ import annotations

import secrets

from app.beat import recovery
from app.intake.submit import submit
from app.run import lease
from app.store import db, jobstore
from tests.fixtures import job_row, sql


def submit_echo(tenant: str, n: int) -> str:
    with db.session() as session:
        job_id = submit(session, tenant_id=tenant, intent_key="system.exec.echo",
                        intent_params={"n": n})
        session.commit()
    return job_id


def test_a_run_lost_with_its_worker_is_handed_out_before_the_jobs_that_came_after_it(tenant):
    running = submit_echo(tenant, 1)
    # Its run's owner held a liveness lock that is free now: a worker that died.
    dead_owner = f"{lease.HOST}:999999:l{secrets.token_hex(8)}-{secrets.token_hex(16)}"
    sql("UPDATE job_executions SET status = 'processing', executed_at = now(), "
        "lease_owner = :owner, lease_expires_at = now() + interval '30 seconds' "
        "WHERE id = CAST(:id AS uuid)", owner=dead_owner, id=running)
    later = [submit_echo(tenant, n) for n in (2, 3)]
    # Waiting in the table behind it (as a backlog the feeder has not handed out yet).
    sql("UPDATE job_executions SET published_at = NULL WHERE id = ANY(CAST(:ids AS uuid[]))",
        ids=later)

    released = [r.id for r in recovery.recover_once()]
    assert running in released and job_row(running)["status"] == "pending"

    with db.engine().connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        picked = jobstore.look(conn, "realtime", 3).picked
    assert [p.id for p in picked] == [running, *later]
