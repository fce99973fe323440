"""Handing jobs to the broker: one message per job, its Celery task id the job's id.

The message carries only the tenant and the job id; the row is the truth and the worker reads
the parameters from it. Flower still shows the academy's name and the parameters (secrets
redacted) through ``kwargsrepr``. A publish that fails never loses a job: every caller goes
through :func:`app.handoff.hand_off`, which un-stamps what did not go so it is sent again.

Several jobs go out in one round trip to Redis (one pipeline of LPUSHes), not one each: the
fairness feeder hands a window's worth of jobs to the broker at a time while the worker it
lives in is consuming. On Redis each message is written as Celery's own (task protocol 2, in
kombu's Redis envelope: what ``send_task`` would write, byte for byte but the delivery tag,
``tests/integration/test_dispatch.py`` holds them to it) without going through kombu's
producer per message: that cost about a millisecond a job in the consuming process, this
a few tens of microseconds. A job with a countdown, or another transport, goes through
``send_task``. No task-sent event is sent for them (Celery's
default, and stock Celery's): Flower shows a job from the moment a worker receives it, and
what waits is in the table (``jobq jobs``, ``jobq stats``).
"""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from app.broker import client as broker_client
from app.broker.celery_app import celery_app
from app.broker.kombu_patch import to_the_front
from app.core.redaction import redact_params
from app.core.settings import settings

log = logging.getLogger("jobq.publish")


@dataclass(frozen=True)
class Outgoing:
    id: str
    tenant_id: str
    intent_key: str
    queue: str
    intent_params: Any = None
    secret_params: tuple[str, ...] = ()
    #: Seconds the broker holds the message before delivery (short waits only).
    countdown: float | None = None
    #: The academy's name, shown in Flower beside the tenant id (None: the id only).
    academy: str | None = None
    #: To the front of its queue: taken by the next worker that asks, before what waits (a
    #: capped academy's next job, handed on by the run that freed its slot).
    front: bool = False


def message_kwargs(job: Outgoing) -> dict[str, str]:
    return {"tenant_id": job.tenant_id, "job_id": job.id}


def publish(jobs: Sequence[Outgoing]) -> list[str]:
    """Send one message per job; return the ids the broker took.

    Never raises for a broker outage: the ids it could not send are simply not returned.
    """
    if not jobs:
        return []
    sent: list[str] = []
    try:
        with celery_app.producer_or_acquire() as producer:
            fast = _redis_channel(producer)
            direct = [job for job in jobs if fast and job.countdown is None]
            later = [job for job in jobs if not (fast and job.countdown is None)]
            if direct:
                _push(producer.channel, direct)
                sent = [job.id for job in direct]
            if later:
                with _batch(producer, len(later)):
                    queued = _send(producer, later)
                # a batch's pipeline runs as its block ends: all went, or none is counted
                sent += queued
    except Exception as exc:  # broker down: app.handoff un-stamps what is left
        log.warning(
            "broker refused %d of %d job(s); they wait in the table to be sent again: %s",
            len(jobs) - len(sent), len(jobs), exc,
        )
    return sent


def _redis_channel(producer: Any) -> bool:
    """The producer is connected, on kombu's Redis channel (the queue is a list; a consumer
    BRPOPs its right end). Not connected yet: kombu's publish connects, with the retry policy
    that gives up in about a second when Redis is down (opening the channel here would keep
    retrying for seconds)."""
    if not producer.connection.connected:
        return False
    channel = producer.channel
    return hasattr(channel, "_q_for_pri") and hasattr(channel, "conn_or_acquire")


#: A message's body after its kwargs (task protocol 2's embed): no callbacks, chain or chord.
_EMBED = {"callbacks": None, "errbacks": None, "chain": None, "chord": None}


def shown(job: Outgoing) -> dict[str, Any]:
    """What Flower shows of a job's arguments (``kwargsrepr``): the academy, the tenant and the
    parameters with secrets redacted; the message itself carries only the ids."""
    return {
        **({"academy": job.academy} if job.academy else {}),
        "tenant_id": job.tenant_id,
        "intent_params": redact_params(job.intent_params, job.secret_params),
    }


def _timelimit(name: str) -> list[int | None]:
    """The registered task's [hard, soft] time limits, as send_task puts them in the message."""
    task = celery_app.tasks.get(name)
    return [getattr(task, "time_limit", None), getattr(task, "soft_time_limit", None)]


def envelope(job: Outgoing, *, origin: str, reply_to: str) -> dict[str, Any]:
    """The message ``send_task`` would write for ``job`` on kombu's Redis transport: Celery's
    task protocol 2 (headers, body ``[args, kwargs, embed]``) in kombu's envelope."""
    body = json.dumps([[], message_kwargs(job), _EMBED]).encode()
    kwargsrepr = repr(shown(job))
    return {
        "body": base64.b64encode(body).decode(),
        "content-encoding": "utf-8",
        "content-type": "application/json",
        "headers": {
            "lang": "py", "task": job.intent_key, "id": job.id, "shadow": None, "eta": None,
            "expires": None, "group": None, "group_index": None, "retries": 0,
            "timelimit": _timelimit(job.intent_key), "root_id": job.id, "parent_id": None, "argsrepr": "()",
            "kwargsrepr": kwargsrepr, "origin": origin, "ignore_result": True,
            "replaced_task_nesting": 0, "stamped_headers": None, "stamps": {},
        },
        "properties": {
            "correlation_id": job.id, "reply_to": reply_to, "kwargsrepr": kwargsrepr,
            "delivery_mode": 2, "delivery_info": {"exchange": "", "routing_key": job.queue},
            "priority": 0, "body_encoding": "base64", "delivery_tag": str(uuid.uuid4()),
        },
    }


def _push(channel: Any, jobs: Sequence[Outgoing]) -> None:
    """Write ``jobs``' messages to their queues in one pipeline (the channel's client adds the
    deployment's key prefix); a job ``front`` goes to the end its consumers take next."""
    from celery.utils.nodenames import anon_nodename

    origin, reply_to = anon_nodename(), celery_app.thread_oid
    with channel.conn_or_acquire() as client, client.pipeline(transaction=False) as pipe:
        for job in jobs:
            message = json.dumps(envelope(job, origin=origin, reply_to=reply_to))
            key = channel._q_for_pri(job.queue, 0)
            if job.front:
                pipe.rpush(key, message)
            else:
                pipe.lpush(key, message)
        pipe.execute()


def waiting(queue: str) -> int | None:
    """How many messages ``queue``'s list in the broker holds (not yet taken by any worker);
    None when the broker cannot say now."""
    try:
        return int(broker_client.client().llen(settings.redis_key_prefix + queue))
    except Exception:  # the broker away: the caller counts from the table
        return None


def _batch(producer, n: int):
    """One pipeline for several messages where the transport offers it (kombu 5.7's Redis)."""
    if n > 1 and hasattr(producer, "batch"):
        return producer.batch(max_size=n)
    return contextlib.nullcontext()


def _send(producer, jobs: Sequence[Outgoing]) -> list[str]:
    queued: list[str] = []
    for job in jobs:
        with to_the_front() if job.front else contextlib.nullcontext():
            _send_one(producer, job, shown(job))
        queued.append(job.id)
    return queued


def _send_one(producer, job: Outgoing, shown_kwargs: dict[str, Any]) -> None:
    celery_app.send_task(
        job.intent_key,
        kwargs=message_kwargs(job),
        task_id=job.id,
        queue=job.queue,
        countdown=job.countdown,
        producer=producer,
        kwargsrepr=repr(shown_kwargs),
        add_to_parent=False,
        # The outcome lives in the table. Without this, a caller outside a worker
        # subscribes to a result channel per job, and while Redis is down that
        # subscription retries for ~20 s before the publish can fail.
        ignore_result=True,
    )
