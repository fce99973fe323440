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
import base64
import contextlib
import json
import logging
import os
import queue
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from celery import states
from sqlalchemy import text

from app.broker import dispatch_queue
from app.broker.celery_app import celery_app
from app.broker.messages import message_problem
from app.broker.publish import Outgoing
from app.core.errors import IntentRefused, TenantRefused
from app.core.redaction import redact_params
from app.core.registry import manifest
from app.core.settings import settings
from app.core.validation import DISPATCH_ARGUMENTS, Request, as_uuid, dispatch_request, job_id_for
from app.handoff import hand_off
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
#: The pump's node heartbeats in Flower this often while it leads.
HEARTBEAT_SECONDS = 2.0

@dataclass
class Taken:
    """One message the pump holds."""

    raw: str
    tag: str = ""
    task_id: str = ""
    headers: dict[str, Any] = field(default_factory=dict)
    args: Any = ()
    kwargs: Any = None
    #: Why workers run it instead (malformed, callbacks), or None.
    for_workers: str | None = None
    request: Request | None = None
    outcome: str | IntentRefused | None = None
    started: float = 0.0


def decode(raw: str) -> Taken:
    """A message as the queue holds it: kombu's envelope around Celery's protocol-2 body."""
    taken = Taken(raw)
    try:
        envelope = json.loads(raw)
        taken.tag = envelope["properties"]["delivery_tag"]
        taken.headers = headers = envelope.get("headers") or {}
        body = envelope["body"]
        if envelope.get("properties", {}).get("body_encoding") == "base64":
            body = base64.b64decode(body)
        if envelope.get("content-type") != "application/json":
            taken.for_workers = f"content type {envelope.get('content-type')!r}"
            return taken
        payload = json.loads(body)
    except Exception as exc:
        taken.for_workers = f"unreadable: {exc}"
        return taken
    problem = message_problem(headers, payload)
    if problem is not None:
        taken.for_workers = problem
        return taken
    args, kwargs, embed = payload
    if embed and any(embed.get(k) for k in ("callbacks", "errbacks", "chain", "chord")):
        taken.for_workers = "it has callbacks"
        return taken
    taken.task_id, taken.args, taken.kwargs = headers["id"], args, kwargs
    return taken


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
    for t in batch:
        t.request = dispatch_request(t.args, t.kwargs, job_id_for(t.task_id))
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


#: Flower's argsrepr and kwargsrepr are cut at this many characters (as Celery's saferepr is).
SHOWN_MAX = 1024


def _cut(text_: str) -> str:
    return text_ if len(text_) <= SHOWN_MAX else text_[:SHOWN_MAX - 3] + "..."


def _shown(t: Taken) -> tuple[str, str]:
    """The call as Flower shows it, secrets hidden as ``dispatch_intent``'s messages hide them
    (:func:`~app.core.redaction.redact_params`; a plain repr, cut, where the task's saferepr
    cost a third of the pump's time)."""
    named = dict(zip(DISPATCH_ARGUMENTS, t.args or (), strict=False))
    key = (t.kwargs or {}).get("intent_key", named.get("intent_key"))
    intent = manifest.get(key) if isinstance(key, str) else None
    secret = intent.secret_params if intent else ()
    return (_cut(repr(redact_params(list(t.args or ()), secret))),
            _cut(repr(redact_params(dict(t.kwargs or {}), secret))))


class Events(threading.Thread):
    """What Flower is told, as a worker tells it, from the ``dispatch-pump@<host>`` node: sent
    from a thread of its own, so publishing a batch's events (a third of the pump's CPU) runs
    while the pump waits on the database for the next batch, never before it."""

    #: Batches of events waiting to go; when more wait, Flower misses some (never the pump).
    BACKLOG = 50

    def __init__(self) -> None:
        super().__init__(name="jobq-dispatch-pump-events", daemon=True)
        self.hostname = f"dispatch-pump@{socket.gethostname()}"
        self.enabled = bool(celery_app.conf.worker_send_task_events)
        self._dispatcher: Any = None
        self._conn: Any = None
        self._waiting: queue.Queue[list[Taken]] = queue.Queue(self.BACKLOG)
        self._halt = threading.Event()
        self.processed = 0
        self.dropped = 0
        self._wanted = 0.0
        self._last_beat = 0.0

    # -- the pump's side -------------------------------------------------------------------------
    def heartbeat(self) -> None:
        """The pump leads: the node heartbeats in Flower while this is called."""
        self._wanted = time.monotonic()
        self._begin()

    def tasks(self, batch: list[Taken]) -> None:
        self.processed += len(batch)
        if not self.enabled or not batch:
            return
        self._begin()
        try:
            self._waiting.put_nowait(batch)
        except queue.Full:
            self.dropped += len(batch)

    def stop(self, timeout: float = 5.0) -> None:
        self._halt.set()
        if self.is_alive():
            self.join(timeout)

    def _begin(self) -> None:
        if self.enabled and not self.is_alive() and not self._halt.is_set():
            with contextlib.suppress(RuntimeError):  # started already
                self.start()

    # -- the thread ------------------------------------------------------------------------------
    def run(self) -> None:
        try:
            while True:
                try:
                    batch = self._waiting.get(timeout=0.5)
                except queue.Empty:
                    if self._halt.is_set():
                        break
                    batch = None
                if batch:
                    self._send(batch)
                self._beat()
        finally:
            self._close()

    def _ready(self) -> Any:
        if self._dispatcher is None:
            self._conn = celery_app.connection_for_write()
            self._dispatcher = celery_app.events.Dispatcher(
                self._conn, hostname=self.hostname, enabled=True, buffer_while_offline=False)
        return self._dispatcher

    def _close(self) -> None:
        if self._dispatcher is not None:
            with contextlib.suppress(Exception):
                self._dispatcher.send("worker-offline", freq=HEARTBEAT_SECONDS)
                self._dispatcher.close()
            with contextlib.suppress(Exception):
                self._conn.release()
        self._dispatcher = self._conn = None

    def _beat(self) -> None:
        now = time.monotonic()
        if now - self._wanted > HEARTBEAT_SECONDS or now - self._last_beat < HEARTBEAT_SECONDS:
            return
        self._last_beat = now
        try:
            self._ready().send("worker-heartbeat", freq=HEARTBEAT_SECONDS, active=0,
                               processed=self.processed, loadavg=list(os.getloadavg()),
                               sw_ident="jobq-dispatch-pump", sw_ver="1", sw_sys="")
        except Exception as exc:
            log.debug("pump heartbeat not sent: %s", exc)
            self._close()

    def _send(self, batch: list[Taken]) -> None:
        """One task-succeeded (or task-failed) per request, carrying what task-received would
        (name, arguments, when it was received): Flower merges them into the task it shows.
        One pipeline for the batch."""
        try:
            dispatcher = self._ready()
            producer = dispatcher.producer
            now = time.time()
            with producer.batch(max_size=len(batch)):
                for t in batch:
                    argsrepr, kwargsrepr = _shown(t)
                    fields = {"uuid": t.task_id, "name": TASK, "args": argsrepr,
                              "kwargs": kwargsrepr, "root_id": t.headers.get("root_id"),
                              "parent_id": t.headers.get("parent_id"),
                              "retries": t.headers.get("retries", 0), "received": t.started,
                              "timestamp": now}
                    if isinstance(t.outcome, BaseException):
                        dispatcher.publish("task-failed", {
                            **fields, "exception": repr(t.outcome), "traceback": None},
                            producer)
                    else:
                        dispatcher.publish("task-succeeded", {
                            **fields, "result": repr(t.outcome),
                            "runtime": round(now - t.started, 6)}, producer)
        except Exception as exc:  # Flower misses them; the rows and results are there
            log.debug("pump task events not sent: %s", exc)
            self._close()


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
