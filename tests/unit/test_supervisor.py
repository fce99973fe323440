"""How long ``jobq run`` waits before starting again a process that stopped on its own."""

from __future__ import annotations

from app.ops.supervisor import MAX_BACKOFF_SECONDS, backoff


def test_a_process_that_keeps_dying_waits_longer_each_time_up_to_the_cap():
    waits = [backoff(n) for n in range(8)]
    assert waits[:5] == [1.0, 2.0, 4.0, 8.0, 16.0]
    assert waits[5:] == [MAX_BACKOFF_SECONDS] * 3 == [30.0] * 3
