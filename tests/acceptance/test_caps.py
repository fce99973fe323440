"""A cap never idles its own academy: on two real solo workers, an academy capped at one running
job runs its backlog back to back while another academy's backlog fills the rest.

Before, the capped academy's next job was handed to the broker only once its last one's
completion was written (with the worker's next claim) and then queued behind the window of
everyone else's jobs: the academy had nothing running for about one job's length each time
(about 6 s with 5 s jobs)."""

from __future__ import annotations

import itertools

import pytest

from app.core.validation import Request
from app.intake.actions import set_tenant_limits
from app.intake.submit import submit_many
from app.store import db
from tests.fixtures import make_tenant, sql, wait_for

SECONDS = 0.4


@pytest.mark.timeout(120)
def test_an_academy_at_its_cap_starts_its_next_job_as_its_last_one_ends(start_worker_process):
    capped, other = make_tenant(), make_tenant()
    set_tenant_limits(capped, weight=2, max_running=1, by="test")
    for _ in range(2):
        start_worker_process("-P", "solo", queues="realtime")
    sleep = {"seconds": SECONDS}
    with db.session() as session:
        submit_many(session, [Request(other, "system.exec.sleep", sleep) for _ in range(40)]
                    + [Request(capped, "system.exec.sleep", sleep) for _ in range(8)])
        session.commit()
    wait_for(lambda: sql("SELECT count(*) = 8 FROM job_executions WHERE tenant_id = "
                         "CAST(:t AS uuid) AND status = 'completed'", t=capped)[0][0],
             timeout=60)
    runs = sql("SELECT executed_at, completed_at FROM job_executions "
               "WHERE tenant_id = CAST(:t AS uuid) ORDER BY executed_at", t=capped)
    # The cap held: never two of its runs at once.
    assert all(b[0] >= a[1] for a, b in itertools.pairwise(runs))
    # And it never sat idle with a backlog: each next run started as the last one ended (the
    # other academy still had jobs waiting throughout, so the workers were busy).
    gaps = [round((b[0] - a[1]).total_seconds(), 3) for a, b in itertools.pairwise(runs)]
    last_other = sql("SELECT max(executed_at) FROM job_executions "
                     "WHERE tenant_id = CAST(:t AS uuid)", t=other)[0][0]
    assert last_other > runs[-1][0], "the other academy's backlog ran out first: no contest"
    # The first hand-on may find the other academy ahead in fair order (its first jobs went to
    # the broker with their insert, before anyone waited, so its virtual time had not moved):
    # the feeder hands that one out. From then on the capped academy is never idle.
    assert max(gaps[1:]) < SECONDS / 2, f"the capped academy idled between its runs: {gaps} s"
