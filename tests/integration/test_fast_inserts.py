"""Plain INSERTs into a queue where nobody waits (0022): the insert trigger names the jobs to the
queue's feeder (``NOTIFY jobq_fast``), which sends them while its window has room, without a look
and without writing the academy's fair-queue row (each write a row version a held xmin horizon
keeps, and every later write of the row walks). What does not fit, and every insert while no
feeder leads, goes the fair way as before. A real feeder, database and broker."""

from __future__ import annotations

import pytest

from app.broker import client as broker_client
from app.core.settings import settings
from app.run import feeder
from tests.fixtures import sql, wait_for

pytestmark = pytest.mark.usefixtures("fresh_queues")

QUEUE = "realtime"


def insert(tenant: str) -> str:
    return sql("INSERT INTO job_executions (tenant_id, intent_key, intent_params, queue) "
               "VALUES (:t, 'system.exec.echo', '{}', :q) RETURNING id::text",
               t=tenant, q=QUEUE)[0][0]


def published(job: str) -> bool:
    return sql("SELECT published_at IS NOT NULL FROM job_executions WHERE id = :id", id=job)[0][0]


def fair_row(tenant: str) -> tuple[bool, str] | None:
    """The academy's fair-queue row: ready, and its version (xmin: a write makes a new one)."""
    rows = sql("SELECT ready, xmin::text FROM fair_queue WHERE queue = :q AND tenant_id = :t",
               q=QUEUE, t=tenant)
    return tuple(rows[0]) if rows else None


def take_message() -> None:
    """What a worker does: take the oldest message off the queue's list (it may be on its way:
    the row is stamped before the message is sent)."""
    assert broker_client.client().brpop([settings.redis_key_prefix + QUEUE], timeout=2)


def run(job: str) -> None:
    """What a worker's run does to the row (a job stamped and not started holds the window)."""
    take_message()
    sql("UPDATE job_executions SET status = 'completed', executed_at = now(), "
        "completed_at = now() WHERE id = :id", id=job)


@pytest.fixture(autouse=True)
def _leave_nothing_behind():
    """What a test here leaves pending (sent, or waiting its turn) is cancelled and its messages
    dropped: a worker of a later test would run it many minutes late, and its academy would lead
    every later test's longest-wait list."""
    yield
    sql("UPDATE job_executions SET status = 'cancelled', completed_at = now(), "
        "error_message = 'left pending by test_fast_inserts' WHERE status = 'pending'")
    broker_client.client().delete(settings.redis_key_prefix + QUEUE)


@pytest.fixture
def leading():
    running = feeder.Feeder([QUEUE], beat=True)
    running.start()
    try:
        wait_for(lambda: running.led == {QUEUE}, 10, message="the feeder to lead realtime")
        yield running
    finally:
        running.stop()


def test_jobs_inserted_one_at_a_time_go_at_once_and_never_write_the_fair_queue(tenant, leading):
    first = insert(tenant)
    wait_for(lambda: published(first), 2, interval=0.01, message="the first job sent")
    run(first)
    made = fair_row(tenant)
    assert made is not None and made[0] is False  # made, not ready: for the sweep's full wake
    for _ in range(20):
        job = insert(tenant)
        wait_for(lambda job=job: published(job), 2, interval=0.01,
                 message="a job inserted into an idle queue to be sent within 2 s")
        run(job)
    assert fair_row(tenant) == made, "the academy's fair-queue row was written again"


def test_what_does_not_fit_the_window_waits_its_turn_in_the_fair_queue(tenant, leading):
    room = leading.windows[QUEUE].size  # nobody takes the messages: the window fills
    jobs = [insert(tenant) for _ in range(room + 3)]
    wait_for(lambda: fair_row(tenant) and fair_row(tenant)[0], 2, interval=0.01,
             message="the academy flagged ready once the window was full")
    assert [published(j) for j in jobs] == [True] * room + [False] * 3
    for job in jobs[:room]:
        run(job)  # the window empties: the feeder's looks send the rest, in order
    wait_for(lambda: all(published(j) for j in jobs), 3, interval=0.02,
             message="the rest sent by the feeder's looks")


def test_with_no_feeder_leading_an_insert_flags_its_academy_ready(tenant):
    insert(tenant)
    assert fair_row(tenant)[0] is True


def test_a_feeder_taking_the_lead_sends_what_no_feeder_heard(tenant):
    job = insert(tenant)  # nobody leads: flagged ready...
    sql("UPDATE fair_queue SET ready = false WHERE queue = :q AND tenant_id = :t",
        q=QUEUE, t=tenant)  # ...as if a feeder had heard it and died before sending it
    running = feeder.Feeder([QUEUE], beat=True)
    running.start()
    try:
        wait_for(lambda: published(job), 3, interval=0.02,
                 message="the job sent once a feeder leads, not at the sweep's next full wake")
    finally:
        running.stop()
