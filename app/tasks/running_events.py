"""A running job's task events on a solo worker: Flower hears of the job while it runs.

A worker buffers its task events (task-received, task-started) for its event loop to send; on
the solo pool that loop is the thread that runs the job, so without this Flower would hear of a
job only when it ends, and a progress event (sent at once) would show a job without a name. A
run that lasts :data:`SEND_AFTER` seconds has the buffer sent from a thread of its own; shorter
runs go out with the loop's next batch as before, at no extra cost.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable
from typing import Any

#: Seconds a run goes on before its buffered events are sent without waiting for its end.
SEND_AFTER = 0.5


class RunningEventSender:
    """Sends the buffered task events of a run still going after ``after`` seconds.

    ``dispatcher`` returns the worker's event dispatcher (a reconnection replaces it). Its
    ``flush`` takes the dispatcher's own lock and copes with events appended meanwhile, so
    calling it from this thread is safe while the loop's thread is busy with the job.
    """

    def __init__(self, dispatcher: Callable[[], Any], after: float = SEND_AFTER) -> None:
        self._dispatcher = dispatcher
        self._after = after
        self._changed = threading.Condition()
        self._run = 0  # counts runs, so a flush is never done for a run that already ended
        self._since: float | None = None
        self._thread: threading.Thread | None = None

    def started(self) -> None:
        with self._changed:
            self._run += 1
            self._since = time.monotonic()
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="jobq-running-events",
                                                daemon=True)
                self._thread.start()
            self._changed.notify()

    def ended(self) -> None:
        with self._changed:
            self._since = None
            self._changed.notify()

    def _loop(self) -> None:
        while True:
            with self._changed:
                while self._since is None:
                    self._changed.wait()
                run, due = self._run, self._since + self._after
                while self._run == run and self._since is not None and \
                        (left := due - time.monotonic()) > 0:
                    self._changed.wait(left)
                if self._run != run or self._since is None:
                    continue  # it ended in time: its events go out with the loop's batch
            self._send()
            with self._changed:
                while self._run == run and self._since is not None:
                    self._changed.wait()  # once per run: nothing else is buffered meanwhile

    def _send(self) -> None:
        dispatcher = self._dispatcher()
        if dispatcher is not None:
            with contextlib.suppress(Exception):  # events are a courtesy to Flower
                dispatcher.flush(errors=False)
