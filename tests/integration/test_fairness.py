"""Fair scheduling between tenants (migration 0005, app.run.feeder): the table is the queue and
the broker holds a bounded window of it.

The first tests call the fair pick itself on a queue no worker consumes (``fairtest``), so the
order it hands jobs out in is seen exactly; the last ones run real workers."""

from __future__ import annotations

import threading
import time

import pytest
from sqlalchemy import text

from app.core.settings import settings
from app.core.validation import Request
from app.intake.actions import set_tenant_limits
from app.intake.submit import submit_many
from app.store import db, jobstore, tenants
from tests.fixtures import make_tenant, queued_job_ids, sql, wait_for

QUEUE = "fairtest"


def _waiting(tenant_id: str, n: int, queue: str = QUEUE, intent: str = "test.exec.record_in_transaction",
             **params) -> None:
    """``n`` jobs of ``tenant_id`` inserted as plain SQL does, on ``queue``."""
    import json

    sql("INSERT INTO job_executions (tenant_id, intent_key, intent_params, queue) "
        "SELECT CAST(:t AS uuid), :k, CAST(:p AS jsonb), :q FROM generate_series(1, :n)",
        t=tenant_id, k=intent, p=json.dumps(params), q=queue, n=n)


def _pick(n: int, queue: str = QUEUE) -> list[str]:
    """The tenants of the next ``n`` jobs the fair pick (``jobq_feed``, app/store/schema.sql)
    hands out, stamped published."""
    with db.engine().begin() as conn:
        return list(conn.execute(text("SELECT tenant_id::text FROM jobq_feed(:q, :n)"),
                                 {"q": queue, "n": n}).scalars())


def _running(tenant_id: str, n: int, queue: str = QUEUE) -> None:
    """Make ``n`` of the tenant's handed-out jobs processing, as a worker's claim would."""
    sql("UPDATE job_executions SET status = 'processing', executed_at = now() WHERE id IN ("
        "SELECT id FROM job_executions WHERE tenant_id = CAST(:t AS uuid) AND queue = :q "
        "AND status = 'pending' AND published_at IS NOT NULL LIMIT :n)", t=tenant_id, q=queue, n=n)


@pytest.fixture(autouse=True)
def _empty_fair_queue():
    sql("DELETE FROM job_executions WHERE queue = :q", q=QUEUE)
    sql("DELETE FROM fair_queue WHERE queue = :q", q=QUEUE)
    sql("DELETE FROM fair_clock WHERE queue = :q", q=QUEUE)
    yield


def test_a_tenant_that_arrives_behind_a_backlog_is_next_not_last():
    burst, quiet = make_tenant(), make_tenant()
    _waiting(burst, 3000)
    assert _pick(100) == [burst] * 100  # alone, it has everything
    _waiting(quiet, 1)
    assert quiet in _pick(2)
    assert sql("SELECT count(*) FROM job_executions WHERE tenant_id = CAST(:t AS uuid) "
               "AND published_at IS NULL", t=burst)[0][0] == 2899


def test_a_newcomer_goes_before_a_round_over_a_thousand_waiting_tenants():
    sql("INSERT INTO tenants (name) SELECT '백로그 학원 ' || i FROM generate_series(1, 1000) i")
    sql("INSERT INTO job_executions (tenant_id, intent_key, queue) "
        "SELECT id, 'system.exec.echo', :q FROM tenants WHERE name LIKE '백로그 학원 %' "
        "ORDER BY created_at DESC LIMIT 1000", q=QUEUE)
    first = _pick(10)
    assert len(set(first)) == 10  # one job each, in turn
    newcomer = make_tenant()
    _waiting(newcomer, 2)
    assert _pick(1) == [newcomer]
    assert newcomer not in _pick(50)  # its next job waits for the round like everyone's


def test_tenants_with_backlogs_share_in_proportion_to_their_weights():
    heavy, light = make_tenant(), make_tenant()
    set_tenant_limits(heavy, weight=2, by="test")
    _waiting(heavy, 200)
    _waiting(light, 200)
    picked = _pick(90)
    assert (picked.count(heavy), picked.count(light)) == (60, 30)


def test_a_capped_tenant_is_skipped_at_its_cap_and_nobody_waits_for_it():
    capped, other = make_tenant(), make_tenant()
    set_tenant_limits(capped, max_running=2, by="test")
    _waiting(capped, 50)
    _waiting(other, 50)
    first = _pick(10)
    assert first.count(capped) == 2 and first.count(other) == 8
    _running(capped, 2)  # its two started: still two in flight, so still none
    assert _pick(5) == [other] * 5
    sql("UPDATE job_executions SET status = 'completed', completed_at = now() "
        "WHERE tenant_id = CAST(:t AS uuid) AND status = 'processing'", t=capped)
    assert _pick(4).count(capped) == 2  # room again, and it is owed its turns


def _hand_on(tenant_id: str, queue: str = QUEUE) -> list[str]:
    """What the run that just ended hands on of its capped tenant's jobs (``jobq_hand_on``)."""
    with db.engine().begin() as conn:
        return [p.tenant_id for p in jobstore.hand_on(conn, queue, tenant_id)]


def test_a_capped_tenants_slot_is_handed_on_by_the_run_that_frees_it_when_its_turn_has_come():
    capped, other = make_tenant(), make_tenant()
    set_tenant_limits(capped, max_running=1, by="test")
    _waiting(capped, 5)
    _waiting(other, 50)
    assert _pick(6).count(capped) == 1
    assert _hand_on(capped) == []  # its one job is still handed out: at its cap
    _running(capped, 1)
    sql("UPDATE job_executions SET status = 'completed' WHERE tenant_id = CAST(:t AS uuid) "
        "AND status = 'processing'", t=capped)
    # Its slot is free and nobody ready would start before it: its next job, at once.
    assert _hand_on(capped) == [capped]
    assert _hand_on(capped) == []  # and only up to its cap
    # An uncapped tenant is the feeder's: a run of its never hands anything on.
    assert _hand_on(other) == []
    # A capped tenant ahead of its turn (another ready tenant would start first) waits for
    # the feeder like anyone else.
    sql("UPDATE job_executions SET status = 'completed' WHERE tenant_id = CAST(:t AS uuid) "
        "AND published_at IS NOT NULL", t=capped)
    sql("UPDATE fair_queue SET vtime = vtime + 100 WHERE tenant_id = CAST(:t AS uuid)", t=capped)
    assert _hand_on(capped) == []
    assert _pick(60).count(capped) == 1  # the feeder still gives it its turns


def test_a_hand_on_that_meets_a_feeders_look_waits_for_it_rather_than_leaving_the_slot_idle():
    """A feeder's look holds the capped tenant's fair-queue row while the run that freed its slot
    hands on. The look began before the slot was free (it saw the tenant at its cap); skipping
    the row left the tenant's next job to the feeder's next look, at the back of the broker's
    queue: the academy sat idle for the whole window (0.8 s in the caps acceptance test)."""
    capped, other = make_tenant(), make_tenant()
    set_tenant_limits(capped, max_running=1, by="test")
    _waiting(capped, 3)
    _waiting(other, 20)
    assert _pick(3).count(capped) == 1
    _running(capped, 1)
    sql("UPDATE job_executions SET status = 'completed' WHERE tenant_id = CAST(:t AS uuid) "
        "AND status = 'processing'", t=capped)
    handed: list[list[str]] = []
    with db.engine().connect() as look:
        look.execute(text("SELECT 1 FROM fair_queue WHERE queue = :q AND tenant_id = "
                          "CAST(:t AS uuid) FOR UPDATE"), {"q": QUEUE, "t": capped})
        thread = threading.Thread(target=lambda: handed.append(_hand_on(capped)))
        thread.start()
        time.sleep(0.3)
        assert not handed, "the hand-on did not wait for the look holding the tenant's row"
        look.rollback()  # the look ends, having handed nothing of the capped tenant out
    thread.join(10)
    assert handed == [[capped]]


def _index_entries_read_by_pick(n: int) -> tuple[list[str], int]:
    """The tenants of the next ``n`` jobs picked, and how many entries of the ready-jobs index
    the pick read (dead ones included: a held horizon keeps them)."""
    # (The backend's counts not yet reported: the pick's are the difference.)
    count = text("SELECT pg_stat_get_xact_tuples_returned('ix_job_executions_ready'::regclass)")
    with db.engine().begin() as conn:
        before = conn.execute(count).scalar_one()
        picked = list(conn.execute(text("SELECT tenant_id::text FROM jobq_feed(:q, :n)"),
                                   {"q": QUEUE, "n": n}).scalars())
        read = conn.execute(count).scalar_one() - before
    return picked, read


def _backlog(tenant_id: str, n: int, *, seconds_ago: int) -> None:
    """``n`` jobs of ``tenant_id`` created one a second, the first ``seconds_ago`` seconds ago."""
    sql("INSERT INTO job_executions (tenant_id, intent_key, queue, created_at) "
        "SELECT CAST(:t AS uuid), 'test.exec.record_in_transaction', :q, "
        "now() - make_interval(secs => :ago - i) FROM generate_series(0, :n - 1) AS i",
        t=tenant_id, q=QUEUE, n=n, ago=seconds_ago)


def test_under_a_held_horizon_a_pick_does_not_walk_the_jobs_already_handed_out():
    """A session idle in a transaction holds the xmin horizon: the index entries of the jobs
    handed out stay. The pick starts where the tenant's last one ended (a second before it),
    not at the first of those entries; before, every pick read all of them (a 3-minute hold at
    50 jobs/s made the pick 46 times dearer in ``bench pressure``)."""
    tenant = make_tenant()
    _backlog(tenant, 600, seconds_ago=700)
    with db.engine().connect() as holder:
        holder.execute(text("SELECT txid_current()"))  # idle in a transaction with an XID
        for _ in range(6):
            assert _pick(100) == [tenant] * 100
        picked, read = _index_entries_read_by_pick(1)
        holder.rollback()
    assert picked == []  # (its backlog is all handed out)
    assert read < 20, f"the pick read {read} index entries for a tenant with nothing waiting"
    _waiting(tenant, 1)
    picked, read = _index_entries_read_by_pick(1)
    assert picked == [tenant] and read < 20


def test_a_job_due_before_where_its_tenants_pick_starts_is_still_picked():
    """Where a tenant's pick starts moves back for what comes due earlier: a job inserted by a
    transaction that began long ago, a job put back to pending after its run was lost; and
    the sweep's full look sets it back for anything else it went past."""
    tenant = make_tenant()
    _backlog(tenant, 5, seconds_ago=100)
    assert _pick(5) == [tenant] * 5
    # Inserted late with an early due time (as a long transaction's created_at is).
    _backlog(tenant, 1, seconds_ago=3600)
    assert _pick(5) == [tenant]
    # A handed-out job put back to pending (its run lost): its due time is an hour ago.
    sql("UPDATE job_executions SET published_at = NULL WHERE id = (SELECT id FROM "
        "job_executions WHERE tenant_id = CAST(:t AS uuid) ORDER BY created_at LIMIT 1)",
        t=tenant)
    assert _pick(5) == [tenant]
    # One the pick went past (as one locked by another transaction would be): the sweep's
    # full look, once a minute, sets every tenant's start back.
    sql("UPDATE job_executions SET published_at = NULL WHERE tenant_id = CAST(:t AS uuid) "
        "AND created_at < now() - interval '50 seconds'", t=tenant)
    sql("UPDATE fair_queue SET feed_from = now() WHERE tenant_id = CAST(:t AS uuid)", t=tenant)
    assert _pick(10) == []
    with db.engine().begin() as conn:
        jobstore.flag_due(conn, newly=120)  # (a round's look leaves it)
    assert _pick(10) == []
    with db.engine().begin() as conn:
        jobstore.flag_due(conn)
    assert _pick(10) == [tenant] * 6


def _ready(tenant_id: str) -> bool:
    return sql("SELECT ready FROM fair_queue WHERE queue = :q AND tenant_id = CAST(:t AS uuid)",
               q=QUEUE, t=tenant_id)[0][0]


def test_a_pick_that_takes_a_tenants_last_due_job_leaves_it_not_ready_in_the_same_write():
    """An academy sending a job at a time: its row is written when the job arrives (ready) and
    when the pick takes it (its virtual time, and not ready: nothing of it waits). Before, the
    next look found it empty and wrote the row a third time; each write is a version every
    lookup of the row walks while a transaction holds the xmin horizon."""
    one, two = make_tenant(), make_tenant()
    _waiting(one, 1)
    _waiting(two, 2)
    updates = text("SELECT pg_stat_get_xact_tuples_updated('fair_queue'::regclass)")
    with db.engine().begin() as conn:
        before = conn.execute(updates).scalar_one()
        picked = list(conn.execute(text("SELECT tenant_id::text FROM jobq_feed(:q, 2)"),
                                   {"q": QUEUE}).scalars())
        written = conn.execute(updates).scalar_one() - before
    assert sorted(picked) == sorted([one, two])
    assert written == 2  # one write of each tenant's row
    assert not _ready(one)  # its only job went
    assert _ready(two)  # one of its two is still waiting
    # A capped tenant given all its room is still ready (what it has left waits for a slot).
    capped = make_tenant()
    set_tenant_limits(capped, max_running=1, by="test")
    _waiting(capped, 2)
    assert _pick(5).count(capped) == 1
    assert _ready(capped)
    # And one that arrives again is ready again, at once.
    _waiting(one, 1)
    assert _ready(one)


def test_a_cap_on_one_queue_leaves_the_tenants_other_queues_alone():
    tenant = make_tenant()
    with db.engine().begin() as conn:  # (set_tenant_limits takes only the engine's queues)
        tenants.set_queue_limit(conn, tenant, QUEUE, 1, by="test")
    _waiting(tenant, 5)
    _waiting(tenant, 5, queue="fairtest2")
    try:
        assert len(_pick(5)) == 1
        assert len(_pick(5, queue="fairtest2")) == 5
    finally:
        sql("DELETE FROM job_executions WHERE queue = 'fairtest2'")
        sql("DELETE FROM fair_queue WHERE queue = 'fairtest2'")


def test_a_suspended_tenants_jobs_are_not_handed_out_until_it_is_resumed():
    suspended, active = make_tenant(), make_tenant()
    _waiting(suspended, 3)
    _waiting(active, 3)
    sql("UPDATE tenants SET status = 'suspended' WHERE id = CAST(:t AS uuid)", t=suspended)
    assert _pick(10) == [active] * 3
    sql("UPDATE tenants SET status = 'active' WHERE id = CAST(:t AS uuid)", t=suspended)
    assert _pick(10) == []  # marked idle while suspended: the sweep wakes it
    with db.engine().begin() as conn:
        assert jobstore.flag_due(conn).get(QUEUE) == 1
    assert _pick(10) == [suspended] * 3


def test_a_job_not_due_yet_is_not_handed_out_and_the_sweep_wakes_it_when_due():
    tenant = make_tenant()
    sql("INSERT INTO job_executions (tenant_id, intent_key, queue, run_at) VALUES "
        "(CAST(:t AS uuid), 'test.exec.record_in_transaction', :q, now() + interval '1 second')",
        t=tenant, q=QUEUE)
    assert _pick(5) == []
    time.sleep(1.1)
    with db.engine().begin() as conn:
        # The sweep's look of every round: the jobs that came due in the last two minutes.
        assert jobstore.flag_due(conn, newly=120).get(QUEUE) == 1
    assert _pick(5) == [tenant]


def test_a_job_that_goes_back_to_pending_waits_in_the_fair_queue_again():
    tenant = make_tenant()
    _waiting(tenant, 1)
    [job] = [r[0] for r in sql("SELECT id::text FROM job_executions WHERE tenant_id = "
                               "CAST(:t AS uuid)", t=tenant)]
    assert _pick(5) == [tenant]
    assert _pick(5) == []
    with db.engine().begin() as conn:  # e.g. the broker refused it
        jobstore.mark_unpublished(conn, [job])
    assert _pick(5) == [tenant]


def test_limits_are_checked_and_every_change_is_recorded():
    tenant = make_tenant()
    with pytest.raises(ValueError, match="weight must be a number above 0"):
        set_tenant_limits(tenant, weight=0, by="test")
    with pytest.raises(ValueError, match="max_running must be a whole number"):
        set_tenant_limits(tenant, max_running=-1, by="test")
    with pytest.raises(ValueError, match="queue 'nope' is not one of"):
        set_tenant_limits(tenant, max_running=1, queue="nope", by="test")
    with pytest.raises(LookupError, match="no tenant"):
        set_tenant_limits("00000000-0000-0000-0000-000000000000", weight=2, by="test")
    limits = set_tenant_limits(tenant, weight=2.5, max_running=4, by="cli:someone@host")
    assert (limits.weight, limits.max_running) == (2.5, 4)
    limits = set_tenant_limits(tenant, max_running=3, queue="bulk", by="cli:someone@host")
    assert limits.queue_max_running == {"bulk": 3} and limits.max_running == 4
    limits = set_tenant_limits(tenant, max_running=0, by="cli:someone@host")
    assert limits.max_running is None
    with db.engine().connect() as conn:
        events = [e for e in tenants.tenant_events(conn, tenant) if e["kind"] == "limits"]
    assert [e["was"] for e in events] == [
        "weight 1, max running unlimited", "max running on bulk unlimited",
        "weight 2.5, max running 4"]
    assert {e["by"] for e in events} == {"cli:someone@host"}


# --- with workers -------------------------------------------------------------------------------

def _published_at_insert(job_id: str) -> bool:
    return sql("SELECT published_at IS NOT NULL FROM job_executions WHERE id = CAST(:j AS uuid)",
               j=job_id)[0][0]


def test_on_an_idle_queue_a_submitted_job_goes_to_the_broker_with_its_insert():
    tenant = make_tenant()
    with db.session() as session:
        [job] = submit_many(session, [Request(tenant, "test.exec.record_in_transaction", {})])
        session.commit()
    assert _published_at_insert(job)
    assert job in queued_job_ids("realtime")
    sql("DELETE FROM job_executions WHERE id = CAST(:j AS uuid)", j=job)


def test_a_batch_over_many_tenants_publishes_one_window_with_its_insert_not_one_per_tenant():
    """The fast path's room is the queue's window, shared by every tenant of the batch: each
    tenant's room was counted alone, so 200 academies' one job each all went to the broker
    with the insert (1,000 in the academies benchmark, against a window of 64)."""
    academies = [make_tenant() for _ in range(200)]
    with db.session() as session:
        jobs = submit_many(session, [Request(t, "test.exec.record_in_transaction", {})
                                     for t in academies])
        session.commit()
    published = sql("SELECT count(*) FROM job_executions WHERE id = ANY(CAST(:ids AS uuid[])) "
                    "AND published_at IS NOT NULL", ids=jobs)[0][0]
    in_broker = len(queued_job_ids("realtime"))
    assert 0 < published <= settings.fair_window
    assert in_broker <= settings.fair_window
    # The others wait in the table, their academies ready for the feeder, in turn.
    assert sql("SELECT count(*) FROM fair_queue WHERE queue = 'realtime' AND ready "
               "AND tenant_id = ANY(CAST(:ids AS uuid[]))", ids=academies)[0][0] \
        == 200 - published


def test_a_quiet_tenants_job_starts_while_anothers_backlog_waits(worker):
    burst, quiet = make_tenant(), make_tenant()
    with db.session() as session:
        submit_many(session, [Request(burst, "system.exec.sleep", {"seconds": 0.05})
                              for _ in range(400)])
        session.commit()
    # Only a window of the burst went to the broker; the rest waits in the table.
    assert len(queued_job_ids("realtime")) <= settings.fair_window
    time.sleep(0.5)
    with db.session() as session:
        [job] = submit_many(session, [Request(quiet, "system.exec.sleep", {"seconds": 0})])
        session.commit()
    done = wait_for(lambda: sql("SELECT completed_at - created_at FROM job_executions "
                                "WHERE id = CAST(:j AS uuid) AND status = 'completed'", j=job),
                    timeout=20)
    waited = done[0][0].total_seconds()
    left = sql("SELECT count(*) FROM job_executions WHERE tenant_id = CAST(:t AS uuid) "
               "AND status = 'pending'", t=burst)[0][0]
    assert waited < 2.0, f"the quiet tenant's job took {waited:.2f} s"
    assert left > 100, f"the burst had only {left} jobs left: the test proves nothing"
    # The window held: what the broker and the workers hold is bounded whatever the backlog.
    in_flight = sql("SELECT count(*) FROM job_executions WHERE tenant_id = CAST(:t AS uuid) "
                    "AND status = 'pending' AND published_at IS NOT NULL", t=burst)[0][0]
    assert in_flight <= settings.fair_window
    wait_for(lambda: sql("SELECT count(*) = 0 FROM job_executions WHERE tenant_id = "
                         "CAST(:t AS uuid) AND status <> 'completed'", t=burst)[0][0], timeout=60)


def test_a_cap_holds_on_real_workers_and_others_use_the_rest(worker):
    capped, other = make_tenant(), make_tenant()
    set_tenant_limits(capped, max_running=1, by="test")
    with db.session() as session:
        submit_many(session, [Request(capped, "system.exec.sleep", {"seconds": 0.2})
                              for _ in range(6)]
                    + [Request(other, "system.exec.sleep", {"seconds": 0.2})
                       for _ in range(6)])
        session.commit()
    wait_for(lambda: sql("SELECT count(*) = 12 FROM job_executions WHERE tenant_id IN "
                         "(CAST(:a AS uuid), CAST(:b AS uuid)) AND status = 'completed'",
                         a=capped, b=other)[0][0], timeout=30)
    # Runs of the capped tenant never overlapped; the other's did (4 worker threads).
    def overlaps(tenant_id: str) -> int:
        return sql("SELECT count(*) FROM job_executions a JOIN job_executions b "
                   "ON a.tenant_id = b.tenant_id AND a.id < b.id "
                   "AND a.executed_at < b.completed_at AND b.executed_at < a.completed_at "
                   "WHERE a.tenant_id = CAST(:t AS uuid)", t=tenant_id)[0][0]
    assert overlaps(capped) == 0
    assert overlaps(other) > 0


def test_retries_waiting_out_a_broker_countdown_do_not_fill_the_window():
    """A retry rides a broker countdown (its row published, due later): no worker is busy with
    it, so the window still takes the next jobs. Counted, a run of retries filled a small
    window and the queue crawled at a few jobs a second (the soak under worker kills)."""
    tenant = make_tenant()
    _waiting(tenant, 4)
    sql("UPDATE job_executions SET published_at = now(), run_at = now() + interval '30 seconds' "
        "WHERE queue = :q", q=QUEUE)  # four retries held by the broker for 30 s
    _waiting(tenant, 10)
    with db.engine().begin() as conn:
        seen = jobstore.look(conn, QUEUE, 4)  # a feeder's look with a window of 4
    assert seen.in_flight == 0 and seen.waiting
    assert len(seen.picked) == 4  # a full window of the waiting jobs, beside the four retries
    assert sql("SELECT count(*) FROM job_executions WHERE queue = :q AND published_at IS NULL",
               q=QUEUE)[0][0] == 6


def test_jobs_stamped_a_moment_ago_hold_the_window_while_their_send_may_be_under_way():
    """A caller's fast path stamps its jobs with the insert and pushes them after its commit;
    the feeder, woken by that commit, may read the queue's list before the push is done. What
    was stamped in the last second counts whatever the list says (the window went over by what
    the caller had not pushed yet: 65 jobs in a window of 64, now and then)."""
    tenant = make_tenant()
    _waiting(tenant, 14)
    assert len(_pick(4)) == 4  # stamped just now, being pushed: the list holds none yet
    with db.engine().begin() as conn:
        assert len(jobstore.look(conn, QUEUE, 6, 0).picked) == 2


def test_jobs_stamped_but_never_sent_do_not_hold_the_window_full():
    """A feeder killed between its pick and its send leaves jobs stamped published that no
    broker list holds: the window counts what the queue's list holds (app.run.feeder asks the
    broker), so the next look still hands out a full window; counted from the table alone,
    they held it full until a sweep."""
    from app.broker import client as broker_client
    from app.broker.publish import waiting

    tenant = make_tenant()
    _waiting(tenant, 14)
    sql("UPDATE job_executions SET published_at = now() - interval '2 seconds' WHERE id IN ("
        "SELECT id FROM job_executions WHERE queue = :q LIMIT 4)", q=QUEUE)  # the feeder died
    listed = settings.redis_key_prefix + QUEUE
    redis = broker_client.client()
    redis.delete(listed)
    try:
        assert waiting(QUEUE) == 0
        with db.engine().begin() as conn:
            assert jobstore.look(conn, QUEUE, 4).picked == []  # the table's count: held full
        with db.engine().begin() as conn:
            assert len(jobstore.look(conn, QUEUE, 4, waiting(QUEUE)).picked) == 4
        redis.lpush(listed, "a", "b", "c")  # three of those four sent, waiting for a worker
        sql("UPDATE job_executions SET published_at = now() - interval '2 seconds' "
            "WHERE queue = :q AND published_at IS NOT NULL", q=QUEUE)  # (sent a while ago)
        assert waiting(QUEUE) == 3
        with db.engine().begin() as conn:
            assert len(jobstore.look(conn, QUEUE, 4, waiting(QUEUE)).picked) == 1
    finally:
        redis.delete(listed)
