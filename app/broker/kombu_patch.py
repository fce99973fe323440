"""A worker outlives a Redis restart.

When Redis goes away while a worker holds unacknowledged messages (always, with late acks),
Celery 5.7 tears the broken connection down and reconnects; but the old channel is still used
afterwards: closed a second time (giving its unacknowledged messages back) and asked to ack the
runs that finish later. With its transport gone, kombu 5.7's Redis channel then fails with
``AttributeError: 'NoneType' object has no attribute 'hostname'`` (or ``'client'``) where a
connection error belongs, and Celery stops the worker as an unrecoverable error; under
``jobq run`` every other process goes with it.

Here such a channel raises a connection error instead, which Celery already handles: the ack is
logged as lost (the message stays in Redis's unacked set, or went with a Redis that lost its
data) and the worker carries on. Nothing is lost: the table is the truth, and the sweep and
lost-run recovery send those jobs again; a run that did finish is not run twice.
"""

from __future__ import annotations

from typing import Any

from kombu.transport import redis as kombu_redis
from redis.exceptions import ConnectionError as RedisConnectionError

_connparams = kombu_redis.Channel._connparams


def _connparams_of_an_open_channel(self: Any, asynchronous: bool = False) -> Any:
    transport = self.connection
    if transport is None or transport.client is None:
        raise RedisConnectionError("this broker channel's connection was closed (Redis restart)")
    return _connparams(self, asynchronous=asynchronous)


def survive_redis_restarts() -> None:
    """Install the guard (idempotent)."""
    kombu_redis.Channel._connparams = _connparams_of_an_open_channel
