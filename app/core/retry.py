"""Should a failed run go again, and when? A small value, testable without a worker.

Transient errors (an explicit :class:`~app.core.errors.TransientError`, connection errors and
timeouts, HTTP 5xx and 429 from ``requests``, a lost database connection, no pooled connection
free in time) are retried with exponential backoff and full jitter until the job's
``max_retries`` is spent; everything else fails the job at once.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from app.core.errors import PermanentError, TransientError, WaitingError
from app.core.manifest import RetryPolicy
from app.core.settings import settings

#: HTTP statuses worth another try.
TRANSIENT_HTTP = frozenset({408, 425, 429, 500, 502, 503, 504})


@dataclass(frozen=True)
class RetryDecision:
    retry: bool
    delay: float = 0.0
    reason: str = ""
    #: A wait (:class:`WaitingError`): the job runs again without a retry spent.
    waiting: bool = False

    @property
    def via_countdown(self) -> bool:
        """Short waits ride a Celery countdown; longer ones wait in the table for the sweep."""
        return self.delay <= settings.eta_max_seconds


def is_transient(exc: BaseException) -> bool:
    if isinstance(exc, PermanentError):
        return False
    if isinstance(exc, TransientError | ConnectionError | TimeoutError):
        return True
    status = _http_status(exc)
    if status is not None:
        return status in TRANSIENT_HTTP
    try:
        import requests

        if isinstance(exc, requests.ConnectionError | requests.Timeout):
            return True
    except ImportError:  # pragma: no cover - requests is a dependency
        pass
    try:
        from sqlalchemy.exc import DBAPIError

        if isinstance(exc, DBAPIError) and exc.connection_invalidated:
            return True
        from sqlalchemy.exc import OperationalError

        if isinstance(exc, OperationalError):
            return True
        from sqlalchemy.exc import TimeoutError as PoolTimeout

        # No pooled connection came free in time (QueuePool): every connection of the
        # process was taken, a shortage that passes like an outage does.
        if isinstance(exc, PoolTimeout):
            return True
    except ImportError:  # pragma: no cover
        pass
    return False


def _http_status(exc: BaseException) -> int | None:
    response = getattr(exc, "response", None)
    status = getattr(response, "status_code", None)
    return status if isinstance(status, int) else None


def backoff(policy: RetryPolicy, attempt: int, rng: random.Random | None = None) -> float:
    """Seconds to wait after failed attempt number ``attempt`` (1-based)."""
    base = settings.retry_backoff_base if policy.base is None else policy.base
    cap = settings.retry_backoff_max if policy.maximum is None else policy.maximum
    ceiling = min(cap, base * policy.factor ** max(attempt - 1, 0))
    if not policy.jitter:
        return ceiling
    # "Full jitter", but never below half the ceiling so a retry storm still spreads out.
    return (rng or random).uniform(ceiling / 2, ceiling)


def decide(exc: BaseException, *, attempt: int, max_retries: int, policy: RetryPolicy) -> RetryDecision:
    """What to do after attempt ``attempt`` (1-based) raised ``exc``."""
    if isinstance(exc, WaitingError):
        return RetryDecision(True, delay=max(0.0, float(exc.retry_after or 0.0)),
                             reason="waiting", waiting=True)
    if not is_transient(exc):
        return RetryDecision(False, reason="permanent error")
    if attempt > max_retries:
        return RetryDecision(False, reason=f"retries exhausted ({max_retries} allowed)")
    delay = backoff(policy, attempt)
    retry_after = getattr(exc, "retry_after", None)
    if isinstance(retry_after, int | float) and retry_after > delay:
        delay = float(retry_after)
    return RetryDecision(True, delay=delay, reason="transient error")
