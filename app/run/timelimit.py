"""Soft time limits where Celery's pool enforces none (``-P solo``): SIGALRM in the main thread.

Prefork children get Celery's own soft and hard limits; a solo worker runs the handler in its
main thread, where an alarm can interrupt it the same way, with the same exception. Threads
pools cannot be interrupted; there a run is bounded only by its lease and the operator.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator

from celery.exceptions import SoftTimeLimitExceeded


def _expire(signum, frame) -> None:
    raise SoftTimeLimitExceeded("soft time limit exceeded")


@contextlib.contextmanager
def soft_limit(seconds: float) -> Iterator[None]:
    """Raise :class:`SoftTimeLimitExceeded` in the block after ``seconds``, where possible."""
    if (seconds <= 0 or threading.current_thread() is not threading.main_thread()
            or not hasattr(signal, "setitimer")):
        yield
        return
    previous = signal.signal(signal.SIGALRM, _expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
