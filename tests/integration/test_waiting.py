"""Why a job waits, read from the real tables (app.store.waiting on the feeder's indexes): an
academy at its cap, and the jobs ahead of one in its queue's fair order. No feeder runs here,
so what is written stays as written."""

from __future__ import annotations

from app.intake.submit import submit
from app.intake.waiting import why_waiting
from app.store import db
from tests.fixtures import make_tenant, sql


def submit_jobs(tenant: str, n: int) -> list[str]:
    """``n`` jobs, one transaction each: each a moment older than the next."""
    ids = []
    for i in range(n):
        with db.session() as session:
            ids.append(submit(session, tenant_id=tenant, intent_key="system.exec.echo",
                              intent_params={"i": i}))
            session.commit()
    return ids


def codes(job_id: str) -> list[str]:
    # No worker runs in this tier: that reason, when the broker has said so, is true but not
    # what these tests look at.
    return [r.code for r in why_waiting(job_id, wait=False) if r.code != "no_worker"]


def test_a_capped_academy_and_its_older_jobs_are_why_its_job_waits():
    capped = make_tenant()
    sql("UPDATE tenants SET max_running = 1 WHERE id = :id", id=capped)
    first, second, third = submit_jobs(capped, 3)
    # A cap applies: nothing skipped the line (jobq_fast_room), all three wait in the table.
    assert sql("SELECT count(*) FROM job_executions WHERE tenant_id = :t "
               "AND published_at IS NULL", t=capped)[0][0] == 3
    sql("UPDATE job_executions SET published_at = now() WHERE id = :id", id=first)

    assert codes(first) == ["handed_to_worker"]
    assert codes(third) == ["academy_at_cap", "behind_in_fair_order"]
    reasons = why_waiting(third, wait=False)
    assert "1 of at most 1 jobs running or handed to a worker across queues" in reasons[0].text
    assert reasons[1].text.startswith("it is behind 1 older job(s) of its own academy")
    assert codes(second) == ["academy_at_cap"]


def test_another_academy_whose_turn_comes_first_is_counted():
    ahead, behind = make_tenant(), make_tenant()
    for tenant in (ahead, behind):
        sql("UPDATE tenants SET max_running = 5 WHERE id = :id", id=tenant)
    [late] = submit_jobs(behind, 1)
    submit_jobs(ahead, 1)
    sql("UPDATE fair_queue SET vtime = 0 WHERE tenant_id = :id", id=ahead)
    sql("UPDATE fair_queue SET vtime = 5 WHERE tenant_id = :id", id=behind)
    assert codes(late) == ["behind_in_fair_order"]
    reasons = why_waiting(late, wait=False)
    assert "1 other academy whose turn comes first" in reasons[0].text
