"""Orphans on the real broker and database (app.run.orphans.check): a message taken through
kombu's own consumer path by a process that then dies (its liveness lock free, its unacked
entry left behind) goes back to its queue at the next check; one held by a live or unknown
process stays where it is; one that never reached the broker goes again once it is
``JOBQ_ORPHAN_AFTER`` old. No worker runs in this module, so the queue shows what was sent."""

from __future__ import annotations

import secrets
from collections.abc import Iterator

import pytest

from app.broker import held as broker_held
from app.broker.celery_app import celery_app
from app.broker.client import client
from app.core.settings import settings
from app.intake.submit import submit
from app.run import orphans
from app.store import db, liveness
from tests.fixtures import job_row, queued_job_ids, sql


def submit_echo(tenant: str) -> str:
    with db.session() as session:
        job_id = submit(session, tenant_id=tenant, intent_key="system.exec.echo",
                        intent_params={"n": 1})
        session.commit()
    return job_id


@pytest.fixture
def take() -> Iterator:
    """Take the next message of a queue as a worker would (kombu's QoS records it unacked,
    and jobq's patch its holder), as the process named ``holder``; the connection then goes
    without giving it back, as a killed worker's does."""
    connections, tags = [], []

    def take(queue: str, holder: str) -> str:
        conn = celery_app.connection_for_read()
        connections.append(conn)
        channel = conn.default_channel
        channel.qos.restore_at_shutdown = False  # a SIGKILL gives nothing back
        broker_held.holder = holder
        try:
            message = channel.basic_get(queue, no_ack=False)
        finally:
            broker_held.holder = ""
        assert message is not None, f"no message in {queue}"
        tags.append(message.delivery_tag)
        return message.delivery_tag

    yield take
    for conn in connections:
        conn.release()
    broker_held.forget(tags)  # nothing held by nobody is left for the tests after these


def unacked(tag: str) -> bool:
    return client().hexists(settings.redis_key_prefix + broker_held.UNACKED, tag)


def dead_token() -> str:
    return secrets.token_hex(8)  # nobody holds its lock


def test_a_message_a_dead_process_held_goes_back_to_its_queue_at_the_next_check(tenant, take):
    job_id = submit_echo(tenant)
    published = job_row(job_id)["published_at"]
    tag = take("realtime", dead_token())
    assert job_id not in queued_job_ids("realtime") and unacked(tag)
    assert [h.job_id for h in broker_held.held_messages() if h.tag == tag] == [job_id]

    checked = orphans.check(["realtime"])

    assert checked.dead_held >= 1
    assert job_id in queued_job_ids("realtime")
    assert job_row(job_id)["published_at"] > published
    # Dropped as the dead process's ack would have: no third copy at the visibility timeout.
    assert not unacked(tag)
    assert tag not in {h.tag for h in broker_held.held_messages()}


def test_a_message_a_live_or_unknown_process_holds_stays_with_it(tenant, take):
    token = secrets.token_hex(8)
    lock = liveness.SessionLock(liveness.LOCK_PROCESS, {"token": token})
    assert lock.hold()
    live, unknown = submit_echo(tenant), submit_echo(tenant)
    live_tag = take("realtime", token)
    unknown_tag = take("realtime", "")
    # However long ago they were handed off.
    sql("UPDATE job_executions SET published_at = now() - interval '1 hour' "
        "WHERE id = ANY(CAST(:ids AS uuid[]))", ids=[live, unknown])

    orphans.check(["realtime"])

    assert unacked(live_tag) and unacked(unknown_tag)
    assert not {live, unknown} & set(queued_job_ids("realtime"))


def test_a_dead_holders_message_of_a_finished_job_is_dropped_not_sent(tenant, take):
    job_id = submit_echo(tenant)
    tag = take("realtime", dead_token())
    sql("UPDATE job_executions SET status = 'completed', completed_at = now() "
        "WHERE id = CAST(:id AS uuid)", id=job_id)

    orphans.check(["realtime"])

    assert not unacked(tag) and job_id not in queued_job_ids("realtime")


def test_a_hand_off_that_never_reached_the_broker_goes_again_once_it_is_old(tenant):
    job_id = submit_echo(tenant)
    client().delete(settings.redis_key_prefix + "realtime")  # the message never went
    orphans.check(["realtime"])
    assert job_id not in queued_job_ids("realtime")  # just handed off: it may be on its way

    sql("UPDATE job_executions SET published_at = now() - make_interval(secs => :age) "
        "WHERE id = CAST(:id AS uuid)", id=job_id, age=settings.orphan_after + 1)
    # Found nowhere once: perhaps a worker took it and has yet to record it as held.
    assert orphans.check(["realtime"]).nowhere == 0
    assert job_id not in queued_job_ids("realtime")
    # Nowhere at the next check too: lost, sent again.
    checked = orphans.check(["realtime"])

    assert checked.nowhere == 1
    assert queued_job_ids("realtime") == [job_id]


def test_an_old_message_still_waiting_in_its_queue_is_not_sent_twice(tenant):
    job_id = submit_echo(tenant)
    sql("UPDATE job_executions SET published_at = now() - interval '1 hour' "
        "WHERE id = CAST(:id AS uuid)", id=job_id)

    assert orphans.check(["realtime"]).nowhere == 0
    assert queued_job_ids("realtime") == [job_id]


def test_a_message_whose_task_id_is_no_job_id_is_passed_over(tenant, take):
    # A Celery client's own task (its id is not a UUID) held by a dead process: the check
    # neither fails on it nor touches it, and still finds the job beside it.
    celery_app.send_task("system.exec.echo", kwargs={}, task_id="not-a-job", queue="realtime")
    other = take("realtime", dead_token())
    job_id = submit_echo(tenant)
    take("realtime", dead_token())

    assert orphans.check(["realtime"]).dead_held == 1
    assert queued_job_ids("realtime") == [job_id] and unacked(other)
