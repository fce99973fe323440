"""One plain Redis client per process on the broker's Redis, for jobq's own keys.

Kombu owns the broker connections; jobq's few keys of its own (send-rate buckets, the broker
epoch marker) go through this client, prefixed with ``JOBQ_REDIS_PREFIX`` like Celery's keys.
A forked worker child gets a client of its own, never its parent's sockets.
"""

from __future__ import annotations

import os
import threading

import redis

from app.core.settings import settings

_clients: dict[int, redis.Redis] = {}
_lock = threading.Lock()


def client() -> redis.Redis:
    pid = os.getpid()
    with _lock:
        found = _clients.get(pid)
        if found is None:
            found = _clients[pid] = redis.Redis.from_url(
                settings.require_broker_url(), socket_timeout=5, socket_connect_timeout=5)
        return found


def key(name: str) -> str:
    """``name`` under this deployment's prefix: ``jobq:`` + name."""
    return f"{settings.redis_key_prefix}jobq:{name}"
