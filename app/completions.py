"""Completions of runs that wrote nothing themselves, recorded in batches off the task's path.

A handler that did no database work of its own (an echo, a message handed to a gateway whose
record is already journaled) needs only its ``completed`` row. Instead of a round trip per run,
the run hands its outcome here and returns; one thread per process writes whatever has
gathered in one statement, at once when idle and in batches under load. If the process dies
before a write, the row stays ``processing`` under a lease nobody renews and lost-run recovery
runs the job again: at least once, never lost. Turning this off (``JOBQ_BATCH_COMPLETIONS=false``)
writes each completion on the task's path instead.
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
import time

from app import audit, db
from app.settings import settings

log = logging.getLogger("jobq.completions")

#: Most completions one statement writes.
MAX_BATCH = 500
#: How long a batch keeps retrying while the database is away, before recovery takes over.
PATIENCE_SECONDS = 60.0


class CompletionWriter:
    def __init__(self) -> None:
        self._pending: list[audit.Outcome] = []
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._pid = os.getpid()
        self._busy = False

    def add(self, outcome: audit.Outcome) -> None:
        if not settings.batch_completions:
            self._write([outcome])
            return
        with self._cond:
            if self._pid != os.getpid():  # forked: the parent's thread did not come along
                self._pending, self._thread, self._pid = [], None, os.getpid()
            self._pending.append(outcome)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._loop, name="jobq-completions",
                                                daemon=True)
                self._thread.start()
            self._cond.notify()

    def flush(self, timeout: float = 10.0) -> None:
        """Wait until everything handed over so far is written (or ``timeout`` passes)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while (self._pending or self._busy) and self._thread and self._thread.is_alive():
                if not self._cond.wait(max(0.0, deadline - time.monotonic())):
                    break
        if self._pending and (self._thread is None or not self._thread.is_alive()):
            batch, self._pending = self._pending, []
            self._write(batch)

    def _loop(self) -> None:
        while True:
            with self._cond:
                while not self._pending:
                    self._cond.wait()
                batch, self._pending = self._pending[:MAX_BATCH], self._pending[MAX_BATCH:]
                self._busy = True
            try:
                self._write(batch)
            finally:
                with self._cond:
                    self._busy = False
                    self._cond.notify_all()

    def _write(self, batch: list[audit.Outcome]) -> None:
        deadline = time.monotonic() + PATIENCE_SECONDS
        delay = 0.2
        while True:
            try:
                with db.status_conn() as conn:
                    done = audit.complete(conn, batch)
                break
            except Exception as exc:
                if time.monotonic() > deadline:
                    log.error("could not record %d completion(s); lost-run recovery will run "
                              "them again: %s", len(batch), exc)
                    return
                time.sleep(delay)
                delay = min(delay * 2, 5.0)
        for outcome in batch:
            if outcome.id not in done:
                log.warning("job %s was cancelled or taken over while it ran; its completion "
                            "was not recorded", outcome.id, extra={"job_id": outcome.id})


writer = CompletionWriter()
atexit.register(writer.flush)
