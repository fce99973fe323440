"""Retry decisions (app.core.retry) as values: what is transient, how long to wait, when the
budget is spent. No worker: the decision a failed run would get."""

from __future__ import annotations

import random

import pytest
import requests
import sqlalchemy.exc

from app.core.errors import PermanentError, TransientError
from app.core.manifest import RetryPolicy
from app.core.retry import backoff, decide, is_transient


def _http_error(status: int) -> requests.HTTPError:
    response = requests.Response()
    response.status_code = status
    return requests.HTTPError(f"{status}", response=response)


@pytest.mark.parametrize(("exc", "transient"), [
    (TransientError("gateway busy"), True),
    (ConnectionError("reset"), True),
    (TimeoutError("slow"), True),
    (requests.ConnectionError("refused"), True),
    # No pooled database connection free in time (QueuePool): a passing shortage.
    (sqlalchemy.exc.TimeoutError("QueuePool limit of size 5 overflow 10 reached, connection "
                                 "timed out, timeout 30.00"), True),
    (_http_error(503), True),
    (_http_error(429), True),
    (_http_error(400), False),
    (_http_error(404), False),
    (PermanentError("no such student"), False),
    (ValueError("bad data"), False),
    (KeyError("missing"), False),
])
def test_what_is_worth_another_try(exc, transient):
    assert is_transient(exc) is transient


def test_a_transient_error_is_retried_with_a_growing_backoff_until_the_budget_is_spent():
    policy = RetryPolicy(base=1.0, factor=2.0, maximum=60.0, jitter=False)
    delays = [decide(TransientError("x"), attempt=a, max_retries=3, policy=policy)
              for a in (1, 2, 3, 4)]
    assert [d.retry for d in delays] == [True, True, True, False]
    assert [d.delay for d in delays[:3]] == [1.0, 2.0, 4.0]
    assert delays[3].reason == "retries exhausted (3 allowed)"


def test_a_permanent_error_fails_at_once_whatever_the_budget():
    decision = decide(PermanentError("no"), attempt=1, max_retries=10, policy=RetryPolicy())
    assert not decision.retry and decision.reason == "permanent error"


def test_backoff_is_capped_and_its_jitter_stays_within_half_to_full():
    policy = RetryPolicy(base=2.0, factor=3.0, maximum=10.0)
    rng = random.Random(7)
    for attempt in range(1, 8):
        ceiling = min(10.0, 2.0 * 3.0 ** (attempt - 1))
        delay = backoff(policy, attempt, rng)
        assert ceiling / 2 <= delay <= ceiling


def test_the_other_sides_retry_after_wins_when_it_asks_for_longer():
    decision = decide(TransientError("429", retry_after=90.0), attempt=1, max_retries=3,
                      policy=RetryPolicy(base=1.0, jitter=False))
    assert decision.retry and decision.delay == 90.0
    assert not decision.via_countdown  # a long wait is kept in the table, not in Redis
    short = decide(TransientError("x"), attempt=1, max_retries=3,
                   policy=RetryPolicy(base=1.0, jitter=False))
    assert short.via_countdown


def test_a_wait_spends_no_retry_and_a_short_one_rides_a_countdown():
    from app.core.errors import WaitingError

    spent = decide(WaitingError("daily quota", retry_after=3600.0), attempt=9, max_retries=3,
                   policy=RetryPolicy(base=1.0, jitter=False))
    assert spent.retry and spent.waiting and spent.delay == 3600.0  # past max_retries: a wait
    assert not spent.via_countdown
    look = decide(WaitingError("chunks", retry_after=1.0), attempt=1, max_retries=0,
                  policy=RetryPolicy())
    assert look.retry and look.via_countdown and look.delay == 1.0
