"""The fairness feeder's window: how much it lets the broker hold, how often it looks again,
and when its size is worth writing down for callers' fast path. Pure logic, no services."""

from __future__ import annotations

import time

from app.run.feeder import BUSY_POLL, MIN_POLL, WINDOW_SECONDS, Window


def drained(window: Window, *, per_look: int, every: float, looks: int) -> Window:
    """``looks`` looks at a window that ``per_look`` jobs leave between two looks, refilled each
    time to its size (what feed_once does), ``every`` seconds apart (simulated clock)."""
    in_flight = 0
    for _ in range(looks):
        in_flight = max(0, in_flight - per_look)
        window._last -= every  # as if ``every`` seconds passed since the last look
        window.observe(in_flight)
        window.pushed = window.size - in_flight
        in_flight = window.size
    return window


def test_the_window_holds_about_a_quarter_second_of_work_within_its_bounds():
    # 200 jobs/s leave it (4 per 20 ms look): about 50 + the floor, not the 64 ceiling.
    window = drained(Window(2, 2, 64), per_look=4, every=0.02, looks=200)
    assert abs(window.rate - 200) < 10
    assert window.size == round(200 * WINDOW_SECONDS) + 2
    # 2,000 jobs/s: held at the ceiling, what Redis may hold per queue.
    assert drained(Window(2, 2, 64), per_look=40, every=0.02, looks=200).size == 64
    # Nothing leaves: the floor, enough to keep each worker process fed.
    assert drained(Window(2, 2, 64), per_look=0, every=0.02, looks=50).size == 2


def test_a_busy_queue_is_looked_at_when_a_quarter_of_its_window_has_left():
    window = Window(64, 2, 64, rate=400.0)
    assert abs(window.next_look() - 64 / 4 / 400) < 1e-9  # 40 ms
    assert Window(64, 2, 64, rate=50.0).next_look() == BUSY_POLL  # never later than this
    assert Window(2, 2, 64, rate=10_000.0).next_look() == MIN_POLL  # never sooner
    assert Window(2, 2, 64, pushed=2).next_look() == MIN_POLL  # no rate yet: soon, it may grow
    # Nothing went out and nothing left (no worker takes the queue): no faster than a busy one.
    assert Window(2, 2, 64).next_look() == BUSY_POLL


def test_the_size_is_written_first_then_only_when_it_moved_by_a_quarter():
    window = Window(40, 2, 64)
    assert window.to_write() == 40
    window.written = 40
    window.size = 48  # +20%: callers' fast path can live with the old figure
    assert window.to_write() is None
    window.size = 50  # +25%
    assert window.to_write() == 50
    window.written, window.size = 3, 5  # small windows: a move of 2 is enough
    assert window.to_write() == 5


def test_a_window_emptied_between_two_looks_doubles_at_once():
    window = Window(8, 2, 64)
    window.pushed = 8
    window._last = time.monotonic() - 1.0  # slow so far: the rate alone would say 3
    assert window.observe(0) == 16  # the workers may have idled: twice the window
