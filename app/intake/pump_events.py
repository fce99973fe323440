"""What Flower is told of the requests the dispatch pump writes (app.intake.pump), as a worker
tells it, from the ``dispatch-pump@<host>`` node."""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import socket
import threading
import time
from typing import Any

from app.broker import dispatch_queue
from app.broker.celery_app import celery_app
from app.core.redaction import redact_params
from app.core.registry import manifest
from app.core.validation import DISPATCH_ARGUMENTS
from app.intake.pump_messages import Taken

log = logging.getLogger("jobq.dispatch")

TASK = dispatch_queue.TASK
#: The pump's node heartbeats in Flower this often while it leads.
HEARTBEAT_SECONDS = 2.0

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
