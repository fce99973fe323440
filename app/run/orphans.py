"""Orphans: jobs handed to the broker that nobody alive will run. Found within a second or so and
sent again at once, so a worker that dies does not stall its queue.

A pending row stamped published counts as in flight (the feeder's window) until a worker
starts it. If the process holding its message died before its claim, or the message never
reached the broker (its sender died between stamping and sending), it would count until the
sweep sent it again after ``JOBQ_REPUBLISH_AFTER``, while the window, counting it, fed the
live workers less, or nothing. The broker says where every message is (app/broker/held.py):

- held by a process whose liveness lock is free (app.store.liveness): its holder is dead, at
  any age of the hand-off: sent again now, and the dead holder's entry dropped (as its ack
  would have), so kombu's visibility-timeout restore sends no third copy;
- in no queue and held by nobody, ``JOBQ_ORPHAN_AFTER`` after its hand-off, at two checks in a
  row (about a second apart): sent again. One look is not enough: a worker takes a message off
  its queue (BRPOP) and records it as held (kombu's unacked, and its holder) in a second round
  trip, and a look between the two finds it nowhere (a drain whose jobs were queued before the
  workers started sent one of 400 twice so);
- held by a live process (a reserved message behind a long run, or a retry's countdown), or
  by one whose liveness is unknown: left alone (the sweep is still the last resort).

A duplicate is harmless (a claim runs a job once), so a race costs a message, never a run.
The check runs in a queue's leading feeder (:func:`tick`), about once a second: one Redis
transaction and one indexed query, plus one more of each when a job has waited too long.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field

from app.broker import held as broker_held
from app.broker.publish import Outgoing
from app.core.registry import manifest
from app.core.settings import settings
from app.handoff import hand_off
from app.run import liveness
from app.store import db, jobstore

log = logging.getLogger("jobq.orphans")

#: Seconds between two checks by a leading feeder.
CHECK_EVERY = 1.0
#: Seconds between two refreshes of this process's holder token (its lock taken again after a
#: database restart within about this).
HOLDER_REFRESH = 1.0
#: Most waiting jobs of the led queues looked at per check, and messages read per queue.
LIMIT = 1000


@dataclass
class Verdict:
    """What one look decided."""

    #: Jobs whose every holder is dead: send again.
    dead_held: list[jobstore.OrphanJob] = field(default_factory=list)
    #: Jobs waiting too long that no process holds: send again if no queue holds them either.
    unseen: list[jobstore.OrphanJob] = field(default_factory=list)
    #: Dead holders' entries to drop: of the jobs sent again, and of jobs no longer pending.
    forget: list[str] = field(default_factory=list)


def judge(held: Iterable[broker_held.Held], dead_tokens: Collection[str],
          jobs: dict[str, jobstore.OrphanJob]) -> Verdict:
    """Decide from the held messages, the dead holders' tokens and the jobs looked up (those
    held, and those waiting too long). Pure."""
    by_job: dict[str, list[broker_held.Held]] = defaultdict(list)
    for h in held:
        by_job[h.job_id].append(h)
    verdict = Verdict()
    for job_id, holders in by_job.items():
        dead = [h for h in holders if h.holder and h.holder in dead_tokens]
        if not dead:
            continue
        job = jobs.get(job_id)
        if job is None or _not_due(job):
            # Not a job's message (a request, beat's caretaking: kombu's visibility timeout
            # brings those back), or a countdown's, sent again once due if nobody alive holds it.
            continue
        if job.waiting and len(dead) == len(holders):
            verdict.dead_held.append(job)
        # Sent again here, or finished, running (lost-run recovery takes it), back in the
        # table, or held by a live process too: the dead holder's entry goes.
        verdict.forget.extend(h.tag for h in dead)
    for job_id, job in jobs.items():
        if job.waiting and job.stale and job_id not in by_job:
            verdict.unseen.append(job)
    return verdict


def _is_job_id(value: str) -> bool:
    try:
        uuid.UUID(value)
    except ValueError:  # not a job's message: a client's own task id
        return False
    return True


def _not_due(job: jobstore.OrphanJob) -> bool:
    return job.pending and job.published_at is not None and not job.waiting


def nowhere(unseen: Iterable[jobstore.OrphanJob], snapshot: broker_held.Snapshot
            ) -> list[jobstore.OrphanJob]:
    """Of ``unseen``, those the broker holds nowhere: in no queue read whole, held by nobody."""
    held_now = {h.job_id for h in snapshot.held}
    found = []
    for job in unseen:
        waiting = snapshot.waiting.get(job.queue or "")
        if waiting is not None and job.id not in waiting and job.id not in held_now:
            found.append(job)
    return found


@dataclass(frozen=True)
class Checked:
    dead_held: int = 0
    nowhere: int = 0
    forgotten: int = 0


def check(queues: Collection[str]) -> Checked:
    """One check of ``queues``: send again what a dead process held or nobody has."""
    queues = sorted(queues)
    held = [h for h in broker_held.held_messages() if h.queue in queues and _is_job_id(h.job_id)]
    with db.engine().connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        seen = jobstore.look_orphans(
            conn, tokens=sorted({h.holder for h in held if h.holder}),
            held=sorted({h.job_id for h in held}), queues=queues,
            after=settings.orphan_after, settle=settings.lease_seconds, limit=LIMIT)
    verdict = judge(held, seen.dead_tokens, seen.jobs)
    lost = list(verdict.unseen)
    if lost:
        # Looked at again, with the queues, in one transaction: a message taken from its queue
        # since the first look is held now, not lost (unless it is between the two).
        snapshot = broker_held.snapshot(sorted({j.queue for j in lost if j.queue}), limit=LIMIT)
        lost = confirmed_lost(nowhere(lost, snapshot))
    else:
        confirmed_lost([])
    if not (verdict.dead_held or lost or verdict.forget):
        return Checked()
    sent = _send_again([*verdict.dead_held, *lost], forget=verdict.forget)
    dead_sent = sum(1 for j in verdict.dead_held if j.id in sent)
    lost_sent = sum(1 for j in lost if j.id in sent)
    if dead_sent:
        log.warning("republished %d job(s) held by a dead worker", dead_sent)
    if lost_sent:
        log.warning("republished %d job(s) whose message was in no queue and held by no worker "
                    "%.0f s after its hand-off", lost_sent, settings.orphan_after)
    return Checked(dead_sent, lost_sent, len(verdict.forget))


#: Jobs found nowhere at the last check: job id -> the hand-off it was found nowhere after.
_suspects: dict[str, object] = {}


def confirmed_lost(found: list[jobstore.OrphanJob]) -> list[jobstore.OrphanJob]:
    """Of the jobs found nowhere now, those also found nowhere at the previous check, after the
    same hand-off; the others are remembered for the next."""
    global _suspects
    lost = [j for j in found if j.id in _suspects and _suspects[j.id] == j.published_at]
    _suspects = {j.id: j.published_at for j in found if j not in lost}
    return lost


def _send_again(jobs: list[jobstore.OrphanJob], *, forget: list[str]) -> set[str]:
    """Lock the jobs still waiting as they were seen, drop the dead holders' entries, stamp and
    hand them off to the front of their queues (they have had their turn)."""
    with db.engine().begin() as conn:
        orphans = jobstore.lock_orphans(conn, jobs)
        broker_held.forget(forget)
        outgoing = []
        for o in orphans:
            intent = manifest.get(o.intent_key)
            if intent is None:  # the sweep refuses it, in its words
                continue
            outgoing.append(Outgoing(o.id, o.tenant_id, o.intent_key, o.queue, o.intent_params,
                                     intent.secret_params, front=True))
        by_queue: dict[str, list[str]] = defaultdict(list)
        for message in outgoing:
            by_queue[message.queue].append(message.id)
        for queue, ids in by_queue.items():  # stamped first, as on every path (app.handoff)
            jobstore.mark_published(conn, ids, queue=queue)
        return set(hand_off(outgoing, conn=conn))


_next_check = 0.0


def tick(queues: Collection[str]) -> None:
    """A leading feeder's hook, called on every round: a check of the queues it leads, at most
    every :data:`CHECK_EVERY` seconds. Never raises (the feeder goes on)."""
    global _next_check
    now = time.monotonic()
    if not queues or now < _next_check:
        return
    _next_check = now + CHECK_EVERY
    try:
        check(queues)
    except Exception as exc:
        log.warning("could not look for orphaned jobs: %s", exc)


class _Holder(threading.Thread):
    """Keeps this consuming process's liveness lock and names it as the holder of the messages
    it takes (app/broker/held.py); "" while it holds none."""

    def __init__(self) -> None:
        super().__init__(name="jobq-holder", daemon=True)

    def run(self) -> None:
        while True:
            refresh_holder()
            time.sleep(HOLDER_REFRESH)


def refresh_holder() -> str:
    try:
        token = liveness.process.token() or ""
    except Exception:  # the database is away: unknown, so nobody takes its messages for lost
        token = ""
    broker_held.holder = token
    return token


_holder_pid: int | None = None


def hold_as_this_process() -> None:
    """Called where a worker starts consuming: its messages name this process as holder."""
    global _holder_pid
    if _holder_pid == os.getpid():
        return
    _holder_pid = os.getpid()
    refresh_holder()
    _Holder().start()
