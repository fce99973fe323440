"""Who feeds the queues, with real processes: beat's process while a beat runs, so the workers'
consuming processes only consume; a worker's feeder when no beat runs (taken over within
about a second of beat's death), and beat again once it is back. Two beats never feed a queue
both. Seen as an operator would: PostgreSQL's locks and the sessions that hold them
(app.run.feeder names each feeder's session ``jobq-feeder:ROLE:PID``)."""

from __future__ import annotations

import signal
import time

import pytest

from app.core.manifest import QUEUES
from app.core.settings import settings
from app.core.validation import Request
from app.intake.submit import submit_many
from app.run.feeder import BEAT_FEEDS
from app.store import db
from tests.fixtures import sql, wait_for

pytestmark = pytest.mark.slow

THIS_DATABASE = "(SELECT oid FROM pg_database WHERE datname = current_database())"


def _unsigned(key: int) -> tuple[int, int]:
    """pg_locks' (classid, objid) of a bigint advisory lock key."""
    key &= (1 << 64) - 1
    return key >> 32, key & 0xFFFFFFFF


def holders(key: int) -> list[tuple[str, str]]:
    """(application name, lock mode) of every session holding advisory lock ``key`` now."""
    classid, objid = _unsigned(key)
    return [tuple(r) for r in sql(
        "SELECT a.application_name, l.mode FROM pg_locks l JOIN pg_stat_activity a USING (pid) "
        "WHERE l.locktype = 'advisory' AND l.objsubid = 1 AND l.granted "
        f"AND l.classid = :c AND l.objid = :o AND l.database = {THIS_DATABASE}",
        c=classid, o=objid)]


def feeding() -> dict[str, list[str]]:
    """Queue -> the feeder sessions leading it (``jobq-feeder:ROLE:PID``)."""
    return {q: [name for name, _ in holders(sql("SELECT jobq_feed_lock(:q)", q=q)[0][0])]
            for q in QUEUES}


def fed_by(pid: int, role: str) -> bool:
    """Whether process ``pid``'s feeder (of ``role``) alone leads every job queue."""
    return all(leaders == [f"jobq-feeder:{role}:{pid}"] for leaders in feeding().values())


def backlog(tenant: str, n: int, seconds: float) -> list[str]:
    with db.session() as session:
        ids = submit_many(session, [Request(tenant, "system.exec.sleep", {"seconds": seconds})
                                    for _ in range(n)])
        session.commit()
    return ids


def left(ids: list[str]) -> int:
    return sql("SELECT count(*) FROM job_executions WHERE id = ANY(CAST(:ids AS uuid[])) "
               "AND status <> 'completed'", ids=ids)[0][0]


def worker_feeder_pids(worker) -> set[int]:
    """The worker processes (its main one and pool children) holding any feeder lock."""
    pids = {worker.pid, *worker.child_pids()}
    return {int(name.rsplit(":", 1)[1]) for leaders in feeding().values() for name in leaders
            if int(name.rsplit(":", 1)[1]) in pids}


def test_with_beat_running_beat_feeds_and_the_workers_hold_no_feeder_lock(
        tenant, start_worker_process, start_beat_process):
    worker = start_worker_process("-P", "prefork", "-c", "2")
    # Alone, the worker's feeder leads its queues (as before beat was required).
    wait_for(lambda: fed_by(worker.pid, "worker"), 10, message="the worker to feed")

    beat = start_beat_process()
    started = time.monotonic()
    wait_for(lambda: fed_by(beat.pid, "beat"), 10, interval=0.05,
             message="beat's process to feed every queue")
    took = time.monotonic() - started
    print(f"\n[feeding] beat took every queue over {took:.2f}s after it started")
    assert took < 3.0
    assert holders(BEAT_FEEDS) == [(f"jobq-feeder:beat:{beat.pid}", "ShareLock")]
    assert "a beat feeds; this worker stops feeding" in worker.log()

    # A backlog far beyond the window flows, fed by beat's process only.
    ids = backlog(tenant, 300, 0)
    wait_for(lambda: left(ids) == 0, 60, interval=0.2, message="the backlog to drain")
    assert worker_feeder_pids(worker) == set()
    assert fed_by(beat.pid, "beat")


def test_beat_killed_under_a_backlog_a_worker_feeds_within_seconds_and_beat_takes_it_back(
        tenant, start_worker_process, start_beat_process):
    worker = start_worker_process("-P", "threads", "-c", "4")
    beat = start_beat_process()
    wait_for(lambda: fed_by(beat.pid, "beat"), 10, message="beat to feed")

    # 0.02 s each on 4 threads: about 3 s of work, most of it waiting in the table.
    ids = backlog(tenant, 600, 0.02)
    wait_for(lambda: left(ids) < 560, 20, message="the backlog to start draining")
    beat.stop(signal.SIGKILL)
    killed = time.monotonic()
    wait_for(lambda: fed_by(worker.pid, "worker"), 10, interval=0.05,
             message="the worker's feeder to take over")
    took = time.monotonic() - killed
    remaining = left(ids)
    print(f"\n[feeding] a worker fed {took:.2f}s after beat's SIGKILL, {remaining} jobs left")
    assert took < 2.5
    assert remaining > 100, "the backlog drained before the kill: the test proves nothing"
    # It drains without beat, but maybe for what the killed feeder stamped and had not sent
    # yet (at most a window): those go again after a check (app.run.orphans) or a sweep, and
    # never hold the window full meanwhile.
    wait_for(lambda: left(ids) <= settings.fair_window, 60, interval=0.2,
             message="the backlog to drain")
    unsent = left(ids)

    # Beat back: it feeds again, and the worker lets go.
    beat = start_beat_process()
    started = time.monotonic()
    wait_for(lambda: fed_by(beat.pid, "beat"), 10, interval=0.05,
             message="the restarted beat to feed")
    print(f"[feeding] the restarted beat fed {time.monotonic() - started:.2f}s after its start; "
          f"{unsent} job(s) left when the worker's feeder had drained the rest")
    assert worker_feeder_pids(worker) == set()
    wait_for(lambda: left(ids) == 0, 30, interval=0.2, message="the stamped ones to complete")
    ids = backlog(tenant, 100, 0)
    wait_for(lambda: left(ids) == 0, 30, interval=0.2, message="the next backlog to drain")


def test_two_beats_never_feed_a_queue_both_and_the_other_feeds_when_one_dies(
        tenant, start_worker_process, start_beat_process):
    worker = start_worker_process("-P", "threads", "-c", "4")
    beats = [start_beat_process(wait=False) for _ in range(2)]
    for beat in beats:
        beat.wait_ready()
    names = {f"jobq-feeder:beat:{b.pid}": b for b in beats}
    wait_for(lambda: sorted(n for n, _ in holders(BEAT_FEEDS)) == sorted(names), 10,
             message="both beats to hold the beat lock")
    wait_for(lambda: all(len(leaders) == 1 and leaders[0] in names
                         for leaders in feeding().values()), 10,
             message="beats to feed every queue")

    ids = backlog(tenant, 300, 0.01)
    # However the queues fall between the two beats, each has one feeder at every look.
    while left(ids):
        assert all(len(leaders) <= 1 for leaders in feeding().values()), feeding()
        time.sleep(0.05)
    assert worker_feeder_pids(worker) == set()

    realtime = names[feeding()["realtime"][0]]
    other = next(b for b in beats if b is not realtime)
    realtime.stop(signal.SIGKILL)
    wait_for(lambda: fed_by(other.pid, "beat"), 5, interval=0.05,
             message="the other beat to feed every queue")
    assert worker_feeder_pids(worker) == set()
