"""The fairness feeder: the table is the queue, and the broker holds a bounded window of it.

A job that arrives while its queue has nobody waiting goes to the broker at once (the insert
stamps it, see ``jobstore.INSERT_JOBS``). Otherwise it waits in ``job_executions`` and a feeder
hands the next jobs to the broker as the window empties, in start-time fair order over tenants:
each tenant's virtual time advances by ``1 / weight`` per job, the tenant with the smallest
goes next, and a tenant that becomes ready starts at the queue's clock, so a tenant with one job
waits for the window, never behind another's backlog (``jobq_feed``, migration 0005). Capped
tenants are skipped while at their cap; nobody else waits for them.

Beat's process feeds every queue, out of the way of the workers' consumers: its feeder holds
:data:`BEAT_FEEDS` (shared) for as long as it lives. Every worker process runs a feeder too,
standing by: it leads a queue only while no beat feeds, and lets go within :data:`LEAD_RETRY`
of a beat starting; when the last beat dies its locks are free and a worker's feeder leads
within about a second. Whoever feeds, one feeder leads per queue: a PostgreSQL session advisory
lock (``jobq_feed_lock(queue)`` in SQL: the insert trigger asks whether anyone leads), freed
when its process dies, so two beats never feed a queue both.
A feeder sleeps on ``LISTEN jobq_feed`` (the insert trigger and the sweep notify, naming the
queue, when it gets a waiting tenant) and ``LISTEN jobq_fast`` (a plain INSERT of a few jobs
into a queue where nobody is ready names the jobs: the feeder sends them while the window has
room, :func:`feed_fast`, with no look and no fair-queue write; 0022). It looks at a queue with a
backlog every few milliseconds, at one with nothing waiting only when named or every
:data:`IDLE_POLL`: one busy queue's looks do not drag the idle ones along.

The window adapts to the rate jobs leave it: about :data:`WINDOW_SECONDS` of work, at least
``settings.fair_window_min`` (enough to keep every worker process fed) and at most
``settings.fair_window``: the bound on what Redis holds per queue (and what a Redis that loses
its data loses, republished from the table by the sweep).
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import select
import threading
import time
import zlib
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection

from app.broker.publish import Outgoing, waiting
from app.core.registry import manifest
from app.core.settings import settings
from app.core.validation import unknown_intent
from app.handoff import hand_off
from app.run import orphans
from app.store import db, jobstore

log = logging.getLogger("jobq.feeder")

#: The window holds about this much of the queue's work (at the rate jobs leave it).
WINDOW_SECONDS = 0.25
#: A queue with a backlog is looked at again when about a quarter of its window has left
#: (at the rate jobs leave it), but no sooner than MIN_POLL and no later than BUSY_POLL: the
#: window holds WINDOW_SECONDS of work, so the workers never run dry between two looks. An idle
#: queue is looked at IDLE_POLL at most (the insert trigger's NOTIFY wakes the feeder sooner).
MIN_POLL = 0.005
BUSY_POLL = 0.05
IDLE_POLL = 1.0
#: A worker's feeder looks this often (seconds) whether a beat feeds: it lets its queues go
#: when one does, and tries for the queues nobody leads when none does.
LEAD_RETRY = 1.0
#: A beat's feeder tries for the queues it does not lead this often (seconds): the gap between
#: a worker letting a queue go and the beat taking it.
BEAT_LEAD_RETRY = 0.25
#: Weight of a new rate sample (per look).
RATE_SMOOTHING = 0.2


def _key(name: str) -> int:
    return (0x6A6F6271 << 32 | zlib.crc32(name.encode())) - (1 << 63)


#: Every beat's feeder holds this advisory lock, shared, while it lives: workers' feeders lead
#: nothing while anyone holds it.
BEAT_FEEDS = _key("jobq-feed-beat")
#: Whether a beat feeds: the exclusive lock cannot be had (taken and let go again at once).
BEAT_FEEDS_NOW = ("SELECT CASE WHEN pg_try_advisory_lock(%(key)s) "
                  "THEN NOT pg_advisory_unlock(%(key)s) ELSE true END")
#: Of the queues given, those whose lock this session takes now.
TAKE_QUEUES = ("SELECT queue FROM unnest(%(queues)s::text[]) AS q(queue)"
               " WHERE pg_try_advisory_lock(jobq_feed_lock(queue))")
LET_GO = ("SELECT pg_advisory_unlock(jobq_feed_lock(queue))"
          " FROM unnest(%(queues)s::text[]) AS q(queue)")
#: Jobs a plain INSERT named for a queue this feeder lets go: flagged ready, the fair way.
FLAG_JOBS = "SELECT jobq_fair_flag_jobs(%s::uuid[])"


@dataclass
class Window:
    """How many jobs of one queue the broker may hold, adapted to the rate they leave it."""

    size: int
    low: int
    high: int
    rate: float = 0.0
    #: The size last written to fair_clock (callers' fast path reads it), None before the first.
    written: int | None = None
    _last: float = field(default_factory=time.monotonic)
    _in_flight: int = 0
    #: Jobs sent to the broker at the last look.
    pushed: int = 0

    def observe(self, in_flight: int) -> int:
        """Fold in a look at the window (``in_flight`` jobs held now); return the new size."""
        pushed_before = self.pushed
        now = time.monotonic()
        elapsed = max(now - self._last, 1e-3)
        left = max(0, self._in_flight + pushed_before - in_flight)
        self.rate += RATE_SMOOTHING * (left / elapsed - self.rate)
        starved = in_flight == 0 and pushed_before >= self.size
        want = math.ceil(self.rate * WINDOW_SECONDS) + self.low
        if starved:  # emptied between two looks: the workers may have idled
            want = max(want, self.size * 2)
        self.size = max(self.low, min(self.high, want))
        self._last, self._in_flight = now, in_flight
        return self.size

    def to_write(self) -> int | None:
        """The size to write to fair_clock, when it moved far enough from the written one."""
        if self.written is None or abs(self.size - self.written) >= max(2, self.written // 4):
            return self.size
        return None

    def next_look(self) -> float:
        """Seconds until a queue with a backlog needs looking at again."""
        if self.rate <= 0:
            # No rate yet: look again soon while jobs go out (the window may need to grow);
            # while nothing leaves (no worker takes the queue, or its tenants are at their
            # caps) as often as a busy queue, not 200 times a second.
            return MIN_POLL if self.pushed else BUSY_POLL
        return min(BUSY_POLL, max(MIN_POLL, self.size / 4 / self.rate))


@dataclass
class FeedResult:
    published: int
    backlog: bool
    window: int
    #: Seconds until this queue wants its next look (when it has a backlog).
    wait: float = BUSY_POLL


def feed_once(queue: str, window: Window) -> FeedResult:
    """One look at ``queue``: fill its window with the next jobs, fairly; then size the window
    for the next look by the rate jobs left it. One autocommit round trip to the database (and
    one more when the window's size moved far enough to be written for callers' fast path),
    one to the broker: the window counts what its list holds, so jobs a feeder stamped and
    died before sending (the sweep's, or a check's, to send again) never hold it full."""
    broker = waiting(queue)
    with db.engine().connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        seen = jobstore.look(conn, queue, window.size, broker)
        picked = seen.picked
        # Someone waited as the look began: look again soon (once too often, at worst).
        backlog = seen.waiting
        size = window.observe(seen.in_flight)
        write = window.to_write()
        if write is not None:
            jobstore.set_window(conn, queue, write)
            window.written = write
    sent, missed = send_picked(queue, picked)
    window.pushed = sent
    return FeedResult(sent, backlog and not missed, size, window.next_look())


def feed_fast(queue: str, window: Window, ids: list[str]) -> int:
    """Jobs the insert trigger named (nobody was ready in ``queue``): stamp and send those the
    window has room for, in one small statement; what does not fit is flagged ready and goes
    the fair way. Without the broker's count, all of them go the fair way. Returns how many
    went."""
    broker = waiting(queue)
    with db.engine().connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        if broker is None:
            jobstore.stamp_fast(conn, queue, ids, 0, 0)  # flags them all
            return 0
        picked = jobstore.stamp_fast(conn, queue, ids, window.size, broker)
    sent, _ = send_picked(queue, picked)
    window.pushed += sent
    return sent


def send_picked(queue: str, picked: list[jobstore.Picked], *,
                front: bool = False) -> tuple[int, int]:
    """Hand off jobs picked (and stamped) for ``queue``, ``front`` to the front of it (what the
    broker does not take goes back to the fair queue), and refuse a job of an intent this
    process does not know. Returns how many went and how many the broker refused."""
    outgoing: list[Outgoing] = []
    unknown: list[jobstore.Picked] = []
    for job in picked:
        intent = manifest.get(job.intent_key)
        if intent is None:
            unknown.append(job)
            continue
        outgoing.append(Outgoing(job.id, job.tenant_id, job.intent_key, queue,
                                 job.intent_params, intent.secret_params, front=front))
    sent = hand_off(outgoing)  # what the broker did not take goes back to the fair queue
    missed = len(outgoing) - len(sent)
    if unknown:
        with db.engine().begin() as conn:
            for job in unknown:
                jobstore.refuse_pending(conn, job.id, unknown_intent(job.intent_key, manifest))
                log.error("job refused: unknown intent key %r", job.intent_key,
                          extra={"job_id": job.id, "tenant_id": job.tenant_id})
    return len(sent), missed


def hand_on(queue: str, tenant_id: str, *, completing: jobstore.Outcome | None = None) -> bool:
    """A run of a capped ``tenant_id`` on ``queue`` ended: its next jobs, when its turn has come,
    go to the front of the queue (``jobstore.hand_on``). ``completing``, the run's completion,
    is written in the same transaction (False when it was not: the run no longer owns its
    job, and nothing is handed on)."""
    with db.engine().begin() as conn:
        if completing is not None and not jobstore.complete(conn, [completing]):
            return False
        picked = jobstore.hand_on(conn, queue, tenant_id)
    if picked:
        send_picked(queue, picked, front=True)
    return True


class Feeder(threading.Thread):
    """Feeds ``queues``, leading those no other feeder leads: in beat's process (``beat``), every
    job queue; in a worker's, the queues it consumes, while no beat feeds."""

    def __init__(self, queues: list[str], *, beat: bool = False) -> None:
        super().__init__(name="jobq-beat-feeder" if beat else "jobq-feeder", daemon=True)
        self.queues = sorted(set(queues))
        self.beat = beat
        #: A beat's feeder: whether it holds BEAT_FEEDS (it leads no queue before).
        self.beat_holds = False
        self.lead_retry = BEAT_LEAD_RETRY if beat else LEAD_RETRY
        self._halt = threading.Event()
        #: The listening connection (psycopg2's, for LISTEN and select()), and what holds it.
        self._conn: Any = None
        self._holder: Connection | None = None
        self.led: set[str] = set()
        #: When each queue needs its next look (monotonic); a queue not in it, at once.
        self.due: dict[str, float] = {}
        #: Job ids the insert trigger named (``jobq_fast``), by led queue, not sent yet.
        self.fast: dict[str, list[str]] = {}
        high = settings.fair_window
        low = min(settings.fair_window_min, high)
        self.windows = {q: Window(low, low, high) for q in self.queues}

    def stop(self, timeout: float = 5.0) -> None:
        self._halt.set()
        if self.is_alive():
            self.join(timeout)

    # -- the listening connection (holds the leader locks) --------------------------------------
    def _connect(self) -> Any:
        # A connection of its own, with the liveness connections' keepalives: it holds the
        # leader locks while it lives, and a host cut off from the network lets them go within
        # seconds (app.store.db.LIVENESS_KEEPALIVES) so another worker's feeder takes over.
        self._holder = db.liveness_connection()
        raw: Any = self._holder.connection.dbapi_connection
        with raw.cursor() as cur:
            # Who leads a queue, in pg_stat_activity beside pg_locks: the role and the process.
            cur.execute("SET application_name = %s",
                        (f"jobq-feeder:{'beat' if self.beat else 'worker'}:{os.getpid()}",))
            cur.execute("LISTEN jobq_feed")
            cur.execute("LISTEN jobq_fast")
        return raw

    def _checks_leads(self) -> bool:
        # A worker's feeder looks for a feeding beat even while it leads every queue.
        return not self.beat or len(self.led) < len(self.queues)

    def _lead(self, conn: Any) -> None:
        """Take the queues nobody leads, as far as this feeder may lead: a beat's once it holds
        BEAT_FEEDS; a worker's while no beat feeds (and it lets go of those it leads when one
        does)."""
        with conn.cursor() as cur:
            if self.beat and not self.beat_holds:
                cur.execute("SELECT pg_try_advisory_lock_shared(%s)", (BEAT_FEEDS,))
                self.beat_holds = bool(cur.fetchone()[0])
                if not self.beat_holds:  # a worker's look held it this instant: next time
                    return
            if not self.beat:
                cur.execute(BEAT_FEEDS_NOW, {"key": BEAT_FEEDS})
                if cur.fetchone()[0]:
                    if self.led:
                        held = [i for q in sorted(self.led) for i in self.fast.pop(q, [])]
                        if held:  # the beat's look takes them, in fair order
                            cur.execute(FLAG_JOBS, (held,))
                        cur.execute(LET_GO, {"queues": sorted(self.led)})
                        log.info("a beat feeds; this worker stops feeding queue(s) %s",
                                 ", ".join(sorted(self.led)))
                        self.led.clear()
                    return
            free = [q for q in self.queues if q not in self.led]
            if not free:
                return
            cur.execute(TAKE_QUEUES, {"queues": free})
            taken = [queue for (queue,) in cur.fetchall()]
            for queue in taken:
                self.led.add(queue)
                self.due.pop(queue, None)
                log.info("feeding queue %s%s", queue, " (beat)" if self.beat else "")
            if taken:
                # Jobs a plain INSERT named while nobody led (a feeder dying, a beat starting)
                # were heard by nobody: their academies are flagged ready now, not at the
                # sweep's next full wake.
                with db.engine().begin() as own:
                    jobstore.flag_due(own)

    def _wait(self, conn: Any, timeout: float) -> None:
        """Sleep until ``timeout`` or a NOTIFY; the queues named by notifications are due now."""
        if timeout > 0:
            ready, _, _ = select.select([conn], [], [], timeout)
            if not ready:
                return
        conn.poll()
        for note in conn.notifies:
            if note.channel == "jobq_fast":
                queue, _, ids = note.payload.partition(" ")
                if queue in self.led and ids:  # (another feeder leads the rest)
                    self.fast.setdefault(queue, []).extend(ids.split(","))
            else:
                self.due[note.payload] = 0.0
        conn.notifies.clear()

    def _close(self) -> None:
        if self._holder is not None:
            with contextlib.suppress(Exception):
                self._holder.close()  # frees the leader locks
        if self._conn is not None or self._holder is not None:
            self._conn = self._holder = None
            self.led.clear()
            self.fast.clear()  # (the sweep's full wake flags what they name)
            self.beat_holds = False

    def _feed_due(self) -> None:
        """Look at the queues whose look is due: one with a backlog as its window empties, one
        with nothing waiting only when the insert trigger or the sweep names it (a NOTIFY) or
        every IDLE_POLL; a busy queue's looks do not drag the idle ones along."""
        for queue in sorted(self.led):
            ids = self.fast.pop(queue, None)
            if ids:
                feed_fast(queue, self.windows[queue], ids)
            if time.monotonic() < self.due.get(queue, 0.0):
                continue
            result = feed_once(queue, self.windows[queue])
            self.due[queue] = time.monotonic() + (result.wait if result.backlog else IDLE_POLL)

    def run(self) -> None:
        next_lead = 0.0
        while not self._halt.is_set():
            try:
                if self._conn is None:
                    self._conn = self._connect()
                    next_lead = 0.0
                conn = self._conn
                if time.monotonic() >= next_lead and self._checks_leads():
                    self._lead(conn)
                    next_lead = time.monotonic() + self.lead_retry
                self._feed_due()
                orphans.tick(self.led)  # what a dead worker held, sent again within seconds
                now = time.monotonic()
                wait = min([IDLE_POLL] + [self.due.get(q, 0.0) - now for q in self.led])
                if self._checks_leads():
                    wait = min(wait, next_lead - now)
                self._wait(conn, max(0.0, wait))
            except Exception as exc:
                if self._halt.is_set():
                    break
                log.warning("feeder: %s; trying again in 1 s", exc)
                self._close()
                self._halt.wait(1.0)
        self._close()


_feeders: dict[int, Feeder] = {}


def start(queues: list[str], owner: object = None, *, beat: bool = False) -> Feeder | None:
    """Start a feeder for ``queues`` (the job queues a worker consumes; every job queue for
    ``beat``) on behalf of ``owner`` (the worker, the beat); :func:`stop` with the same owner
    ends it."""
    queues = [q for q in queues if q != "celery"]
    if not queues or not settings.fair_feeder:
        return None
    feeder = Feeder(queues, beat=beat)
    _feeders[id(owner)] = feeder
    feeder.start()
    return feeder


def stop(owner: object = None) -> None:
    feeder = _feeders.pop(id(owner), None)
    if feeder is not None:
        feeder.stop()
