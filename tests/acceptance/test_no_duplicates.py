"""A drain sends each job to the broker once: jobs queued before any worker runs (the insert's
fast path put the first of them on the broker, beat's feeder the rest) are each taken once when
the workers start, none sent again by the orphan check as lost. Real beat and worker processes,
the broker read as the workers read it."""

from __future__ import annotations

import re
import time

import pytest

from app.core.validation import Request
from app.intake.submit import submit_many
from app.store import db
from tests.fixtures import sql, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("fresh_queues")]

JOBS = 400


def test_jobs_queued_before_the_workers_start_are_each_sent_once(
        tenant, start_worker_process, start_beat_process, tmp_path):
    beat = start_beat_process()
    with db.session() as session:
        ids = submit_many(session, [Request(tenant, "system.exec.echo", {"n": i})
                                    for i in range(JOBS)])
        session.commit()
    time.sleep(4)  # the fast path's messages older than JOBQ_ORPHAN_AFTER when workers start
    worker = start_worker_process("-P", "prefork", "-c", "2", queues="realtime,maintenance")
    wait_for(lambda: sql("SELECT count(*) FROM job_executions WHERE id = ANY(CAST(:ids AS uuid[]))"
                         " AND status = 'completed'", ids=ids)[0][0] == JOBS, 120,
             message=f"all {JOBS} jobs completed")
    dropped = re.findall(r"message dropped: (.*)", worker.log())
    republished = re.findall(r"republished .*", beat.log())
    assert not republished, republished[:3]
    assert not dropped, dropped[:3]
