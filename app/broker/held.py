"""Which process holds which message, as the broker's Redis says it.

Kombu's Redis transport keeps every message a worker took and has not acknowledged in the hash
``unacked`` (delivery tag -> message) and the sorted set ``unacked_index`` (tag -> when it was
delivered), but not who took it: a worker that dies leaves its messages there until the
visibility timeout, hours later. jobq's patch (app/broker/kombu_patch.py) writes beside them,
in the same transaction, ``jobq:held``: tag -> the consuming process's liveness token
(:data:`holder`, app.store.liveness), the queue and the job id; the acknowledgement removes all
three. A token whose liveness lock is free names a dead holder, and its messages are orphans
(app/run/orphans.py).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from app.broker import client as broker_client
from app.core.settings import settings

#: The hash of holders, under kombu's own prefixing (its pipelines add JOBQ_REDIS_PREFIX).
HELD = "jobq:held"
#: kombu's keys (``unacked_key``, ``unacked_index_key``: the transport's defaults).
UNACKED = "unacked"
UNACKED_INDEX = "unacked_index"

#: The liveness token of this process while it consumes and holds its lock; "" when it has
#: none (its messages' holders are then unknown, and nobody takes them for a dead one's).
holder = ""


@dataclass(frozen=True)
class Held:
    """A message a process took from its queue and has not acknowledged."""

    tag: str
    #: The holder's liveness token ("" when unknown).
    holder: str
    queue: str
    job_id: str


def entry(token: str, queue: str, job_id: str) -> str:
    """What ``jobq:held`` keeps for a delivery (the patch writes it)."""
    return f"{token} {queue} {job_id}"


def parse(tag: str | bytes, value: str | bytes) -> Held | None:
    tag = tag.decode() if isinstance(tag, bytes) else tag
    value = value.decode() if isinstance(value, bytes) else value
    parts = value.split(" ")
    if len(parts) != 3:
        return None
    return Held(tag, *parts)


def _key(name: str) -> str:
    return settings.redis_key_prefix + name


def held_messages(client=None) -> list[Held]:
    """Every message held now (one transaction), and the entries of ``jobq:held`` whose message
    is no longer unacknowledged (kombu put it back on another path) dropped on the way."""
    client = client or broker_client.client()
    pipe = client.pipeline()
    pipe.hgetall(_key(HELD)).hkeys(_key(UNACKED))
    entries, unacked = pipe.execute()
    return _current(client, entries, unacked)


def _current(client, entries: dict, unacked: Iterable) -> list[Held]:
    unacked_tags = {t.decode() if isinstance(t, bytes) else t for t in unacked}
    found, stale = [], []
    for tag, value in entries.items():
        held = parse(tag, value)
        if held is not None and held.tag in unacked_tags:
            found.append(held)
        else:
            stale.append(tag)
    if stale:
        client.hdel(_key(HELD), *stale)
    return found


@dataclass(frozen=True)
class Snapshot:
    held: list[Held]
    #: Queue -> the job ids of the messages waiting in it; None when it holds more than was read.
    waiting: dict[str, set[str] | None]


def snapshot(queues: Sequence[str], *, limit: int, client=None) -> Snapshot:
    """What the broker holds, in one transaction: the messages processes hold, and the job ids
    waiting in ``queues`` (at most ``limit`` read per queue)."""
    client = client or broker_client.client()
    pipe = client.pipeline()
    pipe.hgetall(_key(HELD)).hkeys(_key(UNACKED))
    for queue in queues:
        pipe.llen(_key(queue)).lrange(_key(queue), 0, limit - 1)
    entries, unacked, *lists = pipe.execute()
    waiting: dict[str, set[str] | None] = {}
    for i, queue in enumerate(queues):
        length, messages = lists[2 * i], lists[2 * i + 1]
        waiting[queue] = None if length > len(messages) else {_job_id(m) for m in messages}
    return Snapshot(_current(client, entries, unacked), waiting)


def _job_id(raw: bytes | str) -> str:
    try:
        return str(json.loads(raw)["headers"]["id"])
    except (ValueError, KeyError, TypeError):
        return ""


def forget(tags: Sequence[str], client=None) -> None:
    """Drop messages a dead process held, as its acknowledgement would have: kombu's
    visibility-timeout restore then never sends them again."""
    if not tags:
        return
    client = client or broker_client.client()
    pipe = client.pipeline()
    pipe.hdel(_key(UNACKED), *tags).zrem(_key(UNACKED_INDEX), *tags).hdel(_key(HELD), *tags)
    pipe.execute()
