"""The worker's task-event batches (app.broker.consumer): one timer per batch, and a batch
whose timer never fired (dropped with a reconnection) is scheduled again, not left waiting for
a full buffer. Pure logic: a stand-in hub records the timers."""

from __future__ import annotations

from typing import Any

from app.broker import consumer as batches


class Hub:
    def __init__(self) -> None:
        self.timers: list[tuple[float, Any]] = []

    def call_later(self, delay: float, callback: Any) -> None:
        self.timers.append((delay, callback))


class Consumer(batches.Consumer):
    def __init__(self) -> None:  # none of Celery's set-up: only what batching touches
        self.hub = Hub()
        self.flushed = 0

    def _flush_events(self) -> None:
        self.flushed += 1


def test_one_timer_per_batch_then_a_new_one_after_it_fired():
    c = Consumer()
    for _ in range(5):
        c.on_send_event_buffered()
    assert [d for d, _ in c.hub.timers] == [batches.EVENT_BATCH_SECONDS]
    c.hub.timers[0][1]()  # the timer fires: the batch goes out
    assert c.flushed == 1
    c.on_send_event_buffered()
    assert len(c.hub.timers) == 2


def test_a_batch_whose_timer_was_lost_is_scheduled_again(monkeypatch):
    c = Consumer()
    c.on_send_event_buffered()
    # The timer never fires (a reconnection dropped it); a second later the next event
    # schedules the batch again.
    now = batches.time.monotonic()
    monkeypatch.setattr(batches.time, "monotonic", lambda: now + batches.EVENT_BATCH_STALE + 0.1)
    c.on_send_event_buffered()
    assert len(c.hub.timers) == 2
