"""Weights hold over the time the broadcasts wait, on a worker with as few threads as ``jobq
run``'s bulk worker has children (four), against the fake provider (tests/provider.py): three
academies of weights 1, 1, 2, each with guardians for the same seconds at its share, get the
provider's rate 1:1:2 while all of them have messages waiting (issue 25's target: within 10%;
``python -m bench fairness --scenarios g``)."""

from __future__ import annotations

import pytest

from tests.fixtures import in_thread_worker, wait_for_status
from tests.handlers.test_channel_quota import RATE, academy, all_sending, broadcast, kakao  # noqa: F401

pytestmark = pytest.mark.usefixtures("worker")


@pytest.fixture(scope="module")
def worker():
    """An in-thread worker with four threads: the bulk worker's children (app/ops/workers.py)."""
    with in_thread_worker(4) as w:
        yield w


def test_weights_1_1_2_hold_over_the_time_three_broadcasts_wait_with_four_threads(kakao):  # noqa: F811
    seconds = 12  # of messages at each one's share of RATE (30/s): 90, 90 and 180 guardians
    academies = [academy(1, seconds * RATE // 4), academy(2, seconds * RATE // 4),
                 academy(3, seconds * RATE // 2, weight=2)]
    jobs = [broadcast(t) for t, _ in academies]
    for job in jobs:
        assert wait_for_status(job, timeout=180)["status"] == "completed"

    assert kakao.refused == 0 and kakao.busiest_second() <= RATE, kakao.per_second()
    per = {name: kakao.per_second(f"[{name}]") for _, name in academies}
    inner = all_sending(per)
    assert len(inner) >= 5, per
    got = {name: sum(c[s] for s in inner) for name, c in per.items()}
    total = sum(got.values())
    assert total >= 0.90 * RATE * len(inner), (got, inner)
    # 10% is the bench's target over 35 s; over these ~10 s on a loaded test machine, what an
    # academy is still owed when the first broadcast ends (up to 3 s of its share) is not yet
    # made up: a margin.
    for (_, name), weight in zip(academies, (1, 1, 2), strict=True):
        assert got[name] / total == pytest.approx(weight / 4, rel=0.15), (
            got, {n: [c[s] for s in inner] for n, c in per.items()})
