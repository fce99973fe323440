"""A worker outlives a Redis restart; a message can go to the front of its queue; and the
broker knows which process holds each message it handed out.

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

Kombu records a delivered message in ``unacked`` but not who took it; here the same transaction
records the holder too (app/broker/held.py), and every path that removes the message from
``unacked`` (an ack, a reject, a restore) removes that record with it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextvars import ContextVar
from time import time
from typing import Any

import kombu
from kombu.transport import redis as kombu_redis
from kombu.transport import virtual
from kombu.utils.json import dumps
from redis.exceptions import ConnectionError as RedisConnectionError

from app.broker import held

#: The kombu releases this patch was written and tested for (major, minor); pyproject.toml pins
#: the same range. Another release may have fixed the bug, or moved what the patch wraps.
WRITTEN_FOR = (5, 7)

_connparams = kombu_redis.Channel._connparams
_put = kombu_redis.Channel._put
_remove_from_indices = kombu_redis.QoS._remove_from_indices
#: Set while messages are published to the front of their queue (:func:`to_the_front`).
_FRONT: ContextVar[bool] = ContextVar("jobq_front_of_queue", default=False)


def version_problem(version: str = kombu.__version__) -> str | None:
    """What to tell at start-up when kombu is not the release the patch was written for."""
    try:
        found = tuple(int(part) for part in version.split(".")[:2])
    except ValueError:
        found = ()
    if found == WRITTEN_FOR:
        return None
    return (f"kombu {version} is not the {'.'.join(map(str, WRITTEN_FOR))}.x that jobq's patch "
            "for Redis restarts (app/broker/kombu_patch.py) was written for: check that a "
            "worker still outlives a Redis restart (tests/acceptance/test_faults.py) and "
            "update WRITTEN_FOR and the pin in pyproject.toml, or drop the patch if kombu "
            "fixed the bug")


def _connparams_of_an_open_channel(self: Any, asynchronous: bool = False) -> Any:
    transport = self.connection
    if transport is None or transport.client is None:
        raise RedisConnectionError("this broker channel's connection was closed (Redis restart)")
    return _connparams(self, asynchronous=asynchronous)


def survive_redis_restarts() -> None:
    """Install the guard (idempotent)."""
    # Replacing a method of kombu's class is what this module is for (mypy refuses it as a rule).
    kombu_redis.Channel._connparams = _connparams_of_an_open_channel  # type: ignore[method-assign]


@contextlib.contextmanager
def to_the_front() -> Iterator[None]:
    """Messages published in this block go to the front of their queue: the next consumer to
    ask takes them before everything already waiting.

    kombu's Redis transport LPUSHes a message and consumers BRPOP, so the front is the right
    end: RPUSH. (A priority would do it too, but puts every other message under another key.)
    """
    token = _FRONT.set(True)
    try:
        yield
    finally:
        _FRONT.reset(token)


def _put_maybe_to_the_front(self: Any, queue: str, message: Any, **kwargs: Any) -> Any:
    if not _FRONT.get():
        return _put(self, queue, message, **kwargs)
    # kombu 5.7's _put with RPUSH for LPUSH (jobq declares no queue expiry, so no PEXPIRE).
    key = self._q_for_pri(queue, self._get_message_priority(message, reverse=False))
    batch = kwargs.pop("_publish_batch", None)
    if batch is not None:
        batch.add("rpush", key, dumps(message))
        return None
    with self.conn_or_acquire() as client:
        client.rpush(key, dumps(message))
    return None


def front_of_queue() -> None:
    """Install :func:`to_the_front`'s publishing (idempotent)."""
    kombu_redis.Channel._put = _put_maybe_to_the_front  # type: ignore[method-assign]


def _append_with_its_holder(self: Any, message: Any, delivery_tag: str) -> None:
    # kombu 5.7's QoS.append, with the holder recorded in the same transaction.
    delivery = message.delivery_info
    exchange, routing_key = delivery["exchange"], delivery["routing_key"]
    job_id = (message.headers or {}).get("id") or ""
    with self.pipe_or_acquire() as pipe:
        pipe.zadd(self.unacked_index_key, {delivery_tag: time()}) \
            .hset(self.unacked_key, delivery_tag, dumps([message._raw, exchange, routing_key])) \
            .hset(held.HELD, delivery_tag, held.entry(held.holder, routing_key, job_id)) \
            .execute()
        virtual.QoS.append(self, message, delivery_tag)


def _remove_with_its_holder(self: Any, delivery_tag: str, pipe: Any = None) -> Any:
    return _remove_from_indices(self, delivery_tag, pipe).hdel(held.HELD, delivery_tag)


def record_holders() -> None:
    """Record who holds each delivered message (idempotent)."""
    kombu_redis.QoS.append = _append_with_its_holder  # type: ignore[method-assign]
    kombu_redis.QoS._remove_from_indices = _remove_with_its_holder  # type: ignore[method-assign]
