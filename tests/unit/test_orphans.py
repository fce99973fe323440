"""Which jobs handed to the broker are orphans (app.run.orphans.judge and nowhere): sent again
when every process holding them is dead, or when no queue and no process has them long after
their hand-off; left alone while anyone alive (or unknown) holds them. Pure logic, no services."""

from __future__ import annotations

import datetime as dt

from app.broker.held import Held, Snapshot, entry, parse
from app.run.orphans import judge, nowhere
from app.store.jobstore import OrphanJob

AT = dt.datetime(2026, 12, 6, tzinfo=dt.UTC)
DEAD, LIVE = "dead000000000000", "live000000000000"


def job(job_id: str, *, pending: bool = True, waiting: bool = True, stale: bool = False,
        queue: str = "realtime") -> OrphanJob:
    return OrphanJob(job_id, queue, AT, pending, waiting, stale)


def held(tag: str, holder: str, job_id: str) -> Held:
    return Held(tag, holder, "realtime", job_id)


def test_a_job_whose_only_holder_is_dead_goes_again_and_its_entry_is_dropped():
    verdict = judge([held("t1", DEAD, "a")], {DEAD}, {"a": job("a")})
    assert [j.id for j in verdict.dead_held] == ["a"] and verdict.forget == ["t1"]
    assert verdict.unseen == []


def test_a_job_a_live_process_also_holds_is_left_to_it_but_the_dead_copy_is_dropped():
    verdict = judge([held("t1", DEAD, "a"), held("t2", LIVE, "a")], {DEAD}, {"a": job("a")})
    assert verdict.dead_held == [] and verdict.forget == ["t1"]


def test_a_holder_alive_or_unknown_keeps_its_messages_however_long():
    jobs = {"a": job("a", stale=True), "b": job("b", stale=True)}
    verdict = judge([held("t1", LIVE, "a"), held("t2", "", "b")], {DEAD}, jobs)
    assert verdict.dead_held == [] and verdict.unseen == [] and verdict.forget == []


def test_a_countdown_a_dead_process_held_waits_for_its_time_with_its_entry():
    verdict = judge([held("t1", DEAD, "a")], {DEAD}, {"a": job("a", waiting=False)})
    assert verdict.dead_held == [] and verdict.forget == []


def test_a_dead_holders_entry_of_a_job_no_longer_waiting_is_dropped_without_sending():
    # Completed (or running, or back in the table): nothing to send, only the entry goes.
    verdict = judge([held("t1", DEAD, "a")], {DEAD}, {"a": job("a", pending=False,
                                                              waiting=False)})
    assert verdict.dead_held == [] and verdict.forget == ["t1"]


def test_a_message_that_is_no_job_is_never_touched():
    # A dispatch request or beat's caretaking: kombu's visibility timeout brings it back.
    verdict = judge([held("t1", DEAD, "request")], {DEAD}, {})
    assert verdict.dead_held == [] and verdict.forget == []


def test_a_job_waiting_too_long_that_nobody_holds_is_looked_for_in_its_queue():
    jobs = {"old": job("old", stale=True), "new": job("new"), "held": job("held", stale=True)}
    verdict = judge([held("t1", LIVE, "held")], {DEAD}, jobs)
    assert [j.id for j in verdict.unseen] == ["old"]


def test_nowhere_is_in_no_queue_read_whole_and_held_by_nobody():
    lost, queued, taken, unread = (job("lost"), job("queued"), job("taken"),
                                   job("unread", queue="bulk"))
    snapshot = Snapshot(held=[held("t9", LIVE, "taken")],
                        waiting={"realtime": {"queued"}, "bulk": None})
    assert nowhere([lost, queued, taken, unread], snapshot) == [lost]


def test_a_held_entry_reads_back_as_written():
    assert parse(b"tag-1", entry(LIVE, "realtime", "job-1").encode()) == \
        Held("tag-1", LIVE, "realtime", "job-1")
    assert parse("tag-2", entry("", "bulk", "job-2")) == Held("tag-2", "", "bulk", "job-2")
    assert parse("tag-3", "garbage") is None


def test_a_job_is_lost_only_when_found_nowhere_at_two_checks_after_the_same_hand_off():
    from app.run import orphans

    t1, t2 = dt.datetime(2026, 12, 7, 4, 0, 0), dt.datetime(2026, 12, 7, 4, 0, 5)
    a, b = (OrphanJob("a", "realtime", t1, True, True, True),
            OrphanJob("b", "realtime", t1, True, True, True))
    orphans._suspects = {}
    assert orphans.confirmed_lost([a, b]) == []  # once: a worker may be taking it
    assert orphans.confirmed_lost([a]) == [a]  # twice: lost; b was found meanwhile
    assert orphans.confirmed_lost([b]) == []  # b nowhere again, but not at the check before
    # Handed off again since: a new hand-off, looked at afresh.
    assert orphans.confirmed_lost([OrphanJob("b", "realtime", t2, True, True, True)]) == []
