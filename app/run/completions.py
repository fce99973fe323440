"""Completions of runs that wrote nothing themselves, recorded without a round trip of their own.

A handler that did no database work of its own (an echo, a message handed to a gateway whose
record is already journaled) needs only its ``completed`` row. The run hands its outcome here
and returns; the process's next claim carries it to the database in the same statement (see
``jobstore.CLAIM``), and when no next run comes within :data:`LINGER_SECONDS` a small thread
writes it alone. If the process dies first, the row stays ``processing`` under a lease nobody
renews and lost-run recovery runs the job again: at least once, never lost.
``JOBQ_BATCH_COMPLETIONS=false`` writes each completion on the task's path instead.
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
import time
from collections.abc import Iterable, Sequence

from app.core.settings import settings
from app.store import db, jobstore

log = logging.getLogger("jobq.completions")

#: How long a completion may wait for the next claim before it is written on its own.
LINGER_SECONDS = 0.01
#: How long a write keeps retrying while the database is away, before recovery takes over.
PATIENCE_SECONDS = 60.0


class Completions:
    def __init__(self) -> None:
        self._pending: list[jobstore.Outcome] = []
        self._since = 0.0  # when the oldest pending completion arrived
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._pid = os.getpid()

    def add(self, outcome: jobstore.Outcome) -> None:
        if not settings.batch_completions:
            self._write([outcome])
            return
        with self._lock:
            if self._pid != os.getpid():  # forked: the parent's thread did not come along
                self._pending, self._thread, self._pid = [], None, os.getpid()
            if not self._pending:
                self._since = time.monotonic()
            self._pending.append(outcome)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._linger, name="jobq-completions",
                                                daemon=True)
                self._thread.start()

    def take(self) -> list[jobstore.Outcome]:
        """Everything pending, for the caller to write (with a claim)."""
        with self._lock:
            taken, self._pending = self._pending, []
        return taken

    def give_back(self, outcomes: Sequence[jobstore.Outcome]) -> None:
        """Outcomes a failed claim could not write: they wait for the next chance."""
        if outcomes:
            with self._lock:
                self._pending[:0] = outcomes
                self._since = min(self._since, time.monotonic()) if self._pending else 0.0

    def written(self, outcomes: Iterable[jobstore.Outcome], done: set[str]) -> None:
        """Record the end of runs whose job was cancelled or taken over as they finished (a
        cancel the lease keeper had not seen yet): a ``stopped`` event, and a log line."""
        refused = [o for o in outcomes if o.id not in done]
        if not refused:
            return
        reasons: dict[str, str] = {}
        try:
            with db.status_conn() as conn:
                reasons = jobstore.record_stopped(conn, [
                    jobstore.Stopped(o.id, o.owner, o.worker, o.attempt,
                                  (o.detail or {}).get("elapsed_ms", 0.0), interrupted=False)
                    for o in refused])
        except Exception as exc:
            log.warning("could not record the end of %d run(s): %s", len(refused), exc)
        for outcome in refused:
            log.warning("run stopped: job %s as it finished; its completion was not recorded",
                        reasons.get(outcome.id, "cancelled or taken over"),
                        extra={"job_id": outcome.id, "attempt": outcome.attempt})

    def flush(self) -> None:
        """Write whatever is pending now (the process is about to stop)."""
        batch = self.take()
        if batch:
            self._write(batch)

    def _linger(self) -> None:
        # A tick every LINGER_SECONDS, not a wake-up per run: under load the claims carry the
        # completions and this thread finds nothing to do.
        while True:
            time.sleep(LINGER_SECONDS)
            with self._lock:
                due = self._pending and time.monotonic() - self._since >= LINGER_SECONDS
            if due:
                self.flush()

    def _write(self, batch: list[jobstore.Outcome]) -> None:
        deadline = time.monotonic() + PATIENCE_SECONDS
        delay = 0.2
        while True:
            try:
                with db.status_conn() as conn:
                    done = jobstore.complete(conn, batch)
                break
            except Exception as exc:
                if time.monotonic() > deadline:
                    log.error("could not record %d completion(s); lost-run recovery will run "
                              "them again: %s", len(batch), exc)
                    return
                time.sleep(delay)
                delay = min(delay * 2, 5.0)
        self.written(batch, done)


writer = Completions()
atexit.register(writer.flush)
