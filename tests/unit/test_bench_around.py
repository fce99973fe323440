"""The soak's count of jobs around a fault (bench/soak.py ``around``): what issue 24's "jobs
in the 30 s after a worker's SIGKILL against the 30 s before" is computed from."""

from __future__ import annotations

from bench.soak import around


def test_counts_the_span_before_the_fault_began_and_after_it_ended():
    # A fault from 100 to 104 s: 70..99.9 before, 104..133.9 after; the fault itself in neither.
    times = [69.9, 70.0, 85.0, 99.9, 100.0, 102.0, 103.9, 104.0, 120.0, 133.9, 134.0]
    assert around(times, at=100.0, ended=104.0, span=30.0) == (3, 3)


def test_a_stall_after_the_fault_shows_as_a_low_count_after():
    before = [float(t) for t in range(70, 100)]  # one a second before the kill
    after = [130.0, 131.0]  # nothing for 26 s after it ended at 104
    assert around(before + after, at=100.0, ended=104.0, span=30.0) == (30, 2)


def test_nothing_around_gives_zeros():
    assert around([], at=10.0, ended=12.0, span=30.0) == (0, 0)
