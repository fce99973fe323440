"""Redis clients on the broker's Redis, for jobq's own keys: one place that builds them.

Kombu owns the broker connections; jobq's keys of its own (send-rate buckets, the broker
epoch marker, caretaking notes, and whatever else needs Redis) go through :func:`client`,
prefixed with ``JOBQ_REDIS_PREFIX`` like Celery's keys. :func:`connect` understands both
``redis://`` and ``sentinel://`` URLs: with Sentinel, the client asks the sentinels for the
current primary and asks again after a failover, as kombu does for the broker itself. A
forked worker child gets a client of its own, never its parent's sockets.
"""

from __future__ import annotations

import os
import threading
from typing import Any
from urllib.parse import unquote, urlsplit

import redis
from redis.sentinel import Sentinel

from app.core.settings import settings
from app.core.urls import is_sentinel_url

_clients: dict[int, redis.Redis] = {}
_lock = threading.Lock()

#: Seconds jobq's own Redis calls wait to connect and for an answer.
TIMEOUT = 5.0


def sentinel_addresses(url: str) -> list[tuple[str, int]]:
    """The sentinels of ``sentinel://h1:26379;sentinel://h2:26379/0``."""
    found = []
    for part in url.split(";"):
        parts = urlsplit(part.strip())
        if parts.hostname:
            found.append((parts.hostname, parts.port or 26379))
    if not found:
        raise ValueError("a sentinel:// URL names no sentinel host")
    return found


def _credentials(url: str) -> dict[str, Any]:
    """Database number, user and password of a (first) URL, as redis-py takes them."""
    parts = urlsplit(url.split(";")[0].strip())
    params: dict[str, Any] = {}
    path = parts.path.strip("/")
    if path.isdigit():
        params["db"] = int(path)
    if parts.username:
        params["username"] = unquote(parts.username)
    if parts.password:
        params["password"] = unquote(parts.password)
    return params


def sentinel_kwargs(timeout: float = TIMEOUT) -> dict[str, Any]:
    """How to talk to the sentinels themselves (their own password, short timeouts)."""
    kwargs: dict[str, Any] = {"socket_timeout": timeout, "socket_connect_timeout": timeout}
    if settings.sentinel_password:
        kwargs["password"] = settings.sentinel_password
    return kwargs


def connect(url: str | None = None, *, timeout: float = TIMEOUT, **options: Any) -> redis.Redis:
    """A new Redis client of ``url`` (default: the broker's), ``redis://`` or ``sentinel://``.

    With Sentinel it is a client of the primary named ``JOBQ_SENTINEL_MASTER``: each new
    connection asks the sentinels where the primary is, so after a failover the next call
    (after one connection error) reaches the new one.
    """
    url = url or settings.require_broker_url()
    options = {"socket_timeout": timeout, "socket_connect_timeout": timeout, **options}
    if not is_sentinel_url(url):
        return redis.Redis.from_url(url, **options)
    sentinel = Sentinel(sentinel_addresses(url), sentinel_kwargs=sentinel_kwargs(timeout),
                        **_credentials(url), **options)
    return sentinel.master_for(settings.sentinel_master)


def transport_options(url: str | None, timeout: float = TIMEOUT) -> dict[str, Any]:
    """What kombu, Celery's result backend and Flower need beside a ``sentinel://`` URL
    (nothing for ``redis://``)."""
    if not is_sentinel_url(url):
        return {}
    return {"master_name": settings.sentinel_master,
            "sentinel_kwargs": sentinel_kwargs(timeout)}


def client() -> redis.Redis:
    """This process's client of the broker's Redis."""
    pid = os.getpid()
    with _lock:
        found = _clients.get(pid)
        if found is None:
            found = _clients[pid] = connect()
        return found


def key(name: str) -> str:
    """``name`` under this deployment's prefix: ``jobq:`` + name."""
    return f"{settings.redis_key_prefix}jobq:{name}"
