"""Per-key request rate, counted in Redis so it holds across every API process: a fixed window
of one second (longer for rates below one a second), ``INCR`` and ``EXPIRE`` in one round trip.
Over the rate, a request answers 429 with ``Retry-After`` (seconds until the window ends)."""

from __future__ import annotations

import math
import time

from app.broker import client as broker_client

RATE_KEY = "api:rate:"


def over_limit(limit_key: str, rate: float, *, now: float | None = None) -> float | None:
    """None when one more request of ``limit_key`` fits ``rate`` per second; else the seconds
    until it would. A rate of 0 means no limit."""
    if rate <= 0:
        return None
    window = 1.0 if rate >= 1 else math.ceil(1 / rate)
    allowed = max(1, int(rate * window))
    now = time.time() if now is None else now
    slot = int(now // window)
    key = broker_client.key(f"{RATE_KEY}{limit_key}:{slot}")
    pipe = broker_client.client().pipeline(transaction=False)
    pipe.incr(key)
    pipe.expire(key, int(window) + 1)
    count = pipe.execute()[0]
    if count <= allowed:
        return None
    return (slot + 1) * window - now


def retry_after_header(seconds: float) -> str:
    """HTTP's Retry-After is whole seconds: at least 1."""
    return str(max(1, math.ceil(seconds)))
