"""How often beat's feeder looks at each queue, with a real database and broker: a queue with a
backlog is looked at every few tens of milliseconds, one with nothing waiting only when a NOTIFY
names it (or once a second), so one busy queue does not make the feeder call ``jobq_feed`` for
every idle queue as often (each look is a round trip and a function call in PostgreSQL)."""

from __future__ import annotations

import collections
import time

import pytest

from app.core.validation import Request
from app.intake.submit import submit_many
from app.run import feeder
from app.store import db
from tests.fixtures import sql, wait_for

pytestmark = pytest.mark.usefixtures("fresh_queues")


def test_a_busy_queue_does_not_drag_the_idle_queues_looks_along(tenant, monkeypatch):
    looks: collections.Counter[str] = collections.Counter()
    real = feeder.feed_once

    def counted(queue: str, window: feeder.Window) -> feeder.FeedResult:
        looks[queue] += 1
        return real(queue, window)

    monkeypatch.setattr(feeder, "feed_once", counted)
    # A backlog on realtime that nobody consumes: its window fills and its tenant stays ready.
    with db.session() as session:
        submit_many(session, [Request(tenant, "system.exec.echo", {"n": i}) for i in range(300)])
        session.commit()
    running = feeder.Feeder(["realtime", "bulk"], beat=True)
    running.start()
    try:
        wait_for(lambda: running.led == {"realtime", "bulk"}, 10,
                 message="beat's feeder to lead both queues")
        looks.clear()
        time.sleep(2.0)
        busy, idle = looks["realtime"], looks["bulk"]
        # realtime: a look every BUSY_POLL at most (nothing leaves: no worker); bulk: its
        # IDLE_POLL, twice in 2 s (a third when the clock falls just so).
        assert busy >= 20, looks
        assert idle <= 3, looks
        # A job for the idle queue goes at once: the insert trigger names it to the feeder
        # (nobody is ready in bulk), which sends it without waiting for its next look.
        [(job,)] = sql("INSERT INTO job_executions (tenant_id, intent_key, intent_params, queue) "
                       "VALUES (:t, 'system.exec.echo', '{}', 'bulk') RETURNING id::text",
                       t=tenant)
        wait_for(lambda: sql("SELECT published_at IS NOT NULL FROM job_executions "
                             "WHERE id = :id", id=job)[0][0], 0.5, interval=0.01,
                 message="the bulk job to be published within half a second of its insert")
    finally:
        running.stop()
