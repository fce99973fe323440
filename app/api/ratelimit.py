"""Request rates counted in Redis, so they hold across every API process, in fixed windows
(``INCR`` and ``EXPIRE`` in one round trip): each key's requests a second (over it, 429 with
``Retry-After``: seconds until the window ends), and each client address's failed
authentications, checked before its credentials are looked up at all."""

from __future__ import annotations

import ipaddress
import math
import time

from app.broker import client as broker_client

RATE_KEY = "api:rate:"
FAILURES_KEY = "api:authfail:"


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


def client_key(address: str | None) -> str:
    """Who failed, for counting: an IPv4 address, or an IPv6 address's /64 (one host holds a
    whole /64 and could otherwise walk through it)."""
    try:
        found = ipaddress.ip_address(address or "")
    except ValueError:
        return address or "unknown"
    if isinstance(found, ipaddress.IPv6Address):
        if found.ipv4_mapped is not None:
            return str(found.ipv4_mapped)
        return str(ipaddress.ip_network(f"{found}/64", strict=False))
    return str(found)


def _failures_slot(client: str, window: float, now: float) -> tuple[str, int]:
    slot = int(now // window)
    return broker_client.key(f"{FAILURES_KEY}{client}:{slot}"), slot


def failures_wait(client: str, limit: int, window: float, *,
                  now: float | None = None) -> float | None:
    """None while ``client`` has failed to authenticate fewer than ``limit`` times in this
    window (one GET); else the seconds until the window ends. A limit of 0 means none."""
    if limit <= 0:
        return None
    now = time.time() if now is None else now
    key, slot = _failures_slot(client, window, now)
    count = broker_client.client().get(key)
    if count is None or int(count) < limit:
        return None
    return (slot + 1) * window - now


def count_failure(client: str, window: float, *, now: float | None = None) -> int:
    """Count one failed authentication of ``client``; the failures of its window so far."""
    now = time.time() if now is None else now
    key, _ = _failures_slot(client, window, now)
    pipe = broker_client.client().pipeline(transaction=False)
    pipe.incr(key)
    pipe.expire(key, math.ceil(window) + 1)
    return int(pipe.execute()[0])


def retry_after_header(seconds: float) -> str:
    """HTTP's Retry-After is whole seconds: at least 1."""
    return str(max(1, math.ceil(seconds)))
