"""The dispatch pump: ``dispatch_intent`` requests become rows many at a time.

A burst sent through ``dispatch_intent.delay(...)`` is one message per request in the FIFO
``dispatch`` queue. Workers turning them into rows one by one (~300/s) kept a quiet academy's
request behind another academy's thousands for seconds, where the fairness feeder could not
reorder them: they were not rows yet. The pump takes the queue's messages a batch at a time,
validates each request as the ``dispatch_intent`` task does (the same refusals, with the same
audit rows, idempotency keys and approvals), writes the batch with one INSERT
(:func:`app.intake.submit.write_each`), publishes what is due, and stores each request's outcome
in the result backend under its message's task id, as the task would: ``.get()`` returns the job
id or raises the same :class:`~app.core.errors.IntentRefused`. The fairness feeder then orders
the rows.

Delivery is kombu's: a message taken moves atomically (one Lua script) from the queue into
kombu's unacknowledged set (``unacked`` and ``unacked_index``, as a worker's reserved messages)
and the set of what the pump holds; it is acknowledged only once its row is committed and
its result stored. A pump that dies mid-batch leaves its messages there: the next pump to lead
puts them back at the front of the queue at once (and kombu itself would after the visibility
timeout). Taken twice, a request still makes one row: its job id derives from its message's id
(:func:`~app.core.validation.job_id_for`), as a redelivered dispatch's does.

What the pump does not handle stays a worker's: workers keep consuming ``dispatch`` (the
fallback when no pump runs, or while it is behind). The pump takes from the front of the queue
only ``dispatch_intent`` messages without an ETA or expiry and stops at the first other one
(``jobq.cancel_job``, a retry with a countdown), which a worker takes next; a message it took
but will not run itself (malformed, or with callbacks) goes to the back of the queue marked for
workers.

Beat runs the pump (a thread in each beat process, :func:`start`); of several beats one leads
(a PostgreSQL advisory lock, freed when its process dies, so another beat takes over within a
second). Flower sees each request as a worker would show it (its name, its arguments with
secrets hidden, its result or refusal), from one task-succeeded or task-failed event per
request sent by the ``dispatch-pump@<host>`` node, which heartbeats while it leads.
"""

from __future__ import annotations

import atexit
import dataclasses
import logging
import threading
import time

from celery import states
from sqlalchemy import text

from app.broker import dispatch_queue
from app.broker.celery_app import celery_app
from app.broker.publish import Outgoing
from app.core import tracing
from app.core.errors import IntentRefused, TenantRefused
from app.core.settings import settings
from app.core.validation import Request, as_uuid, dispatch_request, job_id_for
from app.handoff import hand_off
from app.intake.pump_events import Events
from app.intake.pump_messages import Taken, decode
from app.intake.submit import write_each
from app.store import db, liveness, tenants

log = logging.getLogger("jobq.dispatch")

TASK = dispatch_queue.TASK
#: The pump's leadership: one advisory lock of jobq's own namespace (beat leads with key 1).
LOCK_PUMP = text(f"SELECT pg_try_advisory_lock({liveness.OTHER_NAMESPACE}, 2)")
#: An empty queue is looked at again after IDLE_POLL, doubling up to IDLE_POLL_MAX while it
#: stays empty (an idle worker takes a lone request at once anyway; a burst is seen within it).
IDLE_POLL = 0.01
IDLE_POLL_MAX = 0.1
#: Leadership is tried again this often by a beat that does not lead.
LEAD_RETRY = 1.0
#: After a database or broker outage, the next try waits this long.
OUTAGE_WAIT = 1.0


# --- one batch ----------------------------------------------------------------------------------


class Outage(Exception):
    """The database is unreachable: the batch goes back to the queue, untouched."""


def _tenant_refusal(req: Request, statuses: dict[str, str]) -> TenantRefused | None:
    """What the task raises for this request's tenant (no row can hold it), or None."""
    try:
        tenant_id = as_uuid(req.tenant_id, "tenant_id", TenantRefused)
        status = statuses.get(tenant_id)
        if status is None:
            raise TenantRefused(f"unknown tenant {tenant_id}", field="tenant_id")
        if status != "active":
            raise TenantRefused(f"tenant {tenant_id} is {status}; its jobs are refused",
                                field="tenant_id")
    except TenantRefused as exc:
        if req.call_problem:  # no row to keep it in: say both (as the task does)
            return TenantRefused(f"{exc}; {req.call_problem}", field=exc.field)
        return exc
    return None


def _tenant_key(req: Request) -> str | None:
    try:
        return as_uuid(req.tenant_id, "tenant_id", TenantRefused)
    except TenantRefused:
        return None


def write_batch(batch: list[Taken]) -> None:
    """Each request's row, one INSERT for all: sets each one's ``outcome``. Raises
    :class:`Outage` when the database is unreachable (nothing of the batch is written then,
    or what is written is found again by its job id)."""
    spans = []
    for t in batch:
        job_id = job_id_for(t.task_id)
        # Each request's span, under its caller's when its message carries one: its job's
        # spans hang under it.
        span = tracing.start_span("dispatch_intent", kind="consumer",
                                  parent=t.headers.get(tracing.TRACEPARENT),
                                  attributes={"jobq.job_id": job_id})
        spans.append(span)
        t.request = dispatch_request(t.args, t.kwargs, job_id)
        if span.traceparent is not None:
            t.request = dataclasses.replace(t.request, traceparent=span.traceparent)
    try:
        _write_batch(batch)
    finally:
        for t, span in zip(batch, spans, strict=True):
            if isinstance(t.outcome, BaseException):
                span.fail(str(t.outcome), kind=type(t.outcome).__name__)
            span.end()


def _write_batch(batch: list[Taken]) -> None:
    try:
        with db.engine().connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            statuses = tenants.statuses_of(
                conn, filter(None, (_tenant_key(t.request) for t in batch if t.request)))
            rows: list[Taken] = []
            for t in batch:
                assert t.request is not None
                refused = _tenant_refusal(t.request, statuses)
                if refused is not None:
                    t.outcome = refused
                else:
                    rows.append(t)
            outgoing: list[Outgoing] = []
            if rows:
                try:
                    ids, refusals, outgoing = write_each(
                        conn, [t.request for t in rows if t.request], source="dispatch")
                except TenantRefused:
                    # A tenant suspended since the look: one by one, as the task would.
                    ids, refusals, outgoing = _one_by_one(conn, rows)
                for t, job_id, refusal in zip(rows, ids, refusals, strict=True):
                    t.outcome = refusal if refusal is not None else job_id
    except Exception as exc:
        if db.is_outage(exc):
            raise Outage(str(exc)) from exc
        raise
    hand_off(outgoing)


def _one_by_one(conn, rows: list[Taken]
                ) -> tuple[list[str], list[IntentRefused | None], list[Outgoing]]:
    ids: list[str] = []
    refusals: list[IntentRefused | None] = []
    outgoing: list[Outgoing] = []
    for t in rows:
        assert t.request is not None
        try:
            one_ids, one_refusals, one_out = write_each(conn, [t.request], source="dispatch")
        except TenantRefused as exc:
            ids.append("")
            refusals.append(TenantRefused(f"{exc}; {t.request.call_problem}", field=exc.field)
                            if t.request.call_problem else exc)
            continue
        ids += one_ids
        refusals += one_refusals
        outgoing += one_out
    return ids, refusals, outgoing


# --- results and Flower -------------------------------------------------------------------------


def store_results(batch: list[Taken]) -> None:
    """Each request's outcome under its task id, as the worker would store it: the job id
    (SUCCESS) or the refusal (FAILURE). One round trip for the batch on a Redis backend."""
    backend = celery_app.backend
    wanted = [t for t in batch if not t.headers.get("ignore_result")]
    if not wanted:
        return
    client = getattr(backend, "client", None)
    if client is None or not hasattr(backend, "get_key_for_task"):  # another backend
        for t in wanted:
            if isinstance(t.outcome, BaseException):
                backend.mark_as_failure(t.task_id, t.outcome)
            else:
                backend.mark_as_done(t.task_id, t.outcome)
        return
    keys = [backend.get_key_for_task(t.task_id) for t in wanted]
    current = client.mget(keys)
    now = celery_app.now().isoformat()
    with client.pipeline(transaction=False) as pipe:
        for t, key, before in zip(wanted, keys, current, strict=True):
            if before is not None and backend.decode_result(before).get("status") == states.SUCCESS:
                continue  # stored by an earlier take of the same message
            failed = isinstance(t.outcome, BaseException)
            state = states.FAILURE if failed else states.SUCCESS
            meta = {"status": state, "result": backend.encode_result(t.outcome, state),
                    "traceback": None, "children": [], "date_done": now,
                    "task_id": t.task_id}
            if t.headers.get("group"):
                meta["group_id"] = t.headers["group"]
            if t.headers.get("parent_id"):
                meta["parent_id"] = t.headers["parent_id"]
            value = backend.encode(meta)
            expires = backend.failure_expires if failed else backend.expires
            if expires:
                pipe.setex(key, int(expires), value)
            else:
                pipe.set(key, value)
            pipe.publish(key, value)
        pipe.execute()


# --- the loop -----------------------------------------------------------------------------------


def pump_once(broker: dispatch_queue.Held, events: Events | None = None, n: int | None = None) -> int:
    """Take up to ``n`` requests, write them, store their outcomes, acknowledge them; return
    how many were taken. Raises :class:`Outage` (the batch is back in the queue)."""
    raws = broker.take(n or settings.dispatch_batch)
    if not raws:
        return 0
    started = time.time()
    taken = [decode(r) for r in raws]
    for t in taken:
        t.started = started
    mine = [t for t in taken if t.for_workers is None]
    others = [t for t in taken if t.for_workers is not None]
    if others:
        for t in others:
            log.info("dispatch message %s left to a worker: %s", t.tag, t.for_workers)
        broker.give_back([t.tag for t in others if t.tag], for_workers=True)
    if mine:
        try:
            write_batch(mine)
        except Outage:
            broker.give_back([t.tag for t in mine])
            raise
        except Exception:
            log.exception("dispatch pump: a batch of %d failed; workers take it", len(mine))
            broker.give_back([t.tag for t in mine], for_workers=True)
            return len(raws)
        store_results(mine)
        broker.ack([t.tag for t in mine])
        if events is not None:
            events.tasks(mine)
    return len(raws)


class Pump(threading.Thread):
    """A beat's pump thread: leads when no other pump does, then pumps until stopped."""

    def __init__(self) -> None:
        super().__init__(name="jobq-dispatch-pump", daemon=True)
        self._halt = threading.Event()
        self.leadership = liveness.SessionLock(LOCK_PUMP, retry_seconds=LEAD_RETRY)
        self.leading = False
        self.pumped = 0

    def stop(self, timeout: float = 5.0) -> None:
        self._halt.set()
        if self.is_alive() and threading.current_thread() is not self:
            self.join(timeout)

    def run(self) -> None:
        broker: dispatch_queue.Held | None = None
        events = Events()
        idle = IDLE_POLL
        try:
            while not self._halt.is_set():
                try:
                    if not self.leadership.hold():
                        if self.leading:
                            log.info("another beat pumps dispatch requests now")
                        self.leading = False
                        self._halt.wait(LEAD_RETRY)
                        continue
                    broker = broker or dispatch_queue.Held()
                    if not self.leading:  # what a pump that stopped held goes back first
                        back = broker.give_back(broker.held_tags())
                        self.leading = True
                        log.info("this beat pumps dispatch requests%s",
                                 f" ({back} held by a pump that stopped are back in the "
                                 "queue)" if back else "")
                    events.heartbeat()
                    n = pump_once(broker, events)
                    self.pumped += n
                    if n == 0:
                        self._halt.wait(idle)
                        idle = min(IDLE_POLL_MAX, idle * 2)
                    else:
                        idle = IDLE_POLL
                except Outage as exc:
                    log.warning("dispatch pump: database unavailable (%s); trying again in "
                                "%.0f s", exc, OUTAGE_WAIT)
                    self._halt.wait(OUTAGE_WAIT)
                except Exception as exc:
                    if self._halt.is_set():
                        break
                    log.warning("dispatch pump: %s; trying again in %.0f s", exc, OUTAGE_WAIT)
                    broker = None
                    # What it held (a batch whose results or ack did not reach Redis) goes
                    # back to the queue before the next batch, as when leading anew.
                    self.leading = False
                    self._halt.wait(OUTAGE_WAIT)
        finally:
            events.stop()
            self.leadership.release()
            self.leading = False


_pump: Pump | None = None


def start() -> Pump | None:
    """Start this process's pump (idempotent); it stops when the process exits."""
    global _pump
    if not settings.dispatch_pump:
        return None
    if _pump is None or not _pump.is_alive():
        _pump = Pump()
        _pump.start()
        atexit.register(stop)
    return _pump


def stop() -> None:
    global _pump
    if _pump is not None:
        _pump.stop()
        _pump = None
