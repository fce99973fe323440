"""When a solo worker's buffered task events go out (app/tasks/running_events.py): for a run
still going after the delay, once; for a run that ended in time, not at all (the worker's loop
sends them with its next batch)."""

from __future__ import annotations

import threading

from app.tasks.running_events import RunningEventSender


class Dispatcher:
    """Counts flushes, as the worker's event dispatcher would send its buffer."""

    def __init__(self) -> None:
        self.flushes = 0
        self.flushed = threading.Event()

    def flush(self, errors: bool = True, groups: bool = True) -> None:
        self.flushes += 1
        self.flushed.set()


def test_a_long_run_has_its_events_sent_once_and_a_short_one_none():
    dispatcher = Dispatcher()
    sender = RunningEventSender(lambda: dispatcher, after=0.2)

    sender.started()
    sender.ended()  # a short run: ended long before its delay
    sender.started()  # a long one
    assert dispatcher.flushed.wait(5)
    sender.ended()
    sender.started()  # the next long run gets its own
    dispatcher.flushed.clear()
    assert dispatcher.flushed.wait(5)
    sender.ended()
    assert dispatcher.flushes == 2

