"""Handing jobs to the broker: one message per job, its Celery task id the job's id.

The message carries only the tenant and the job id; the row is the truth and the worker reads
the parameters from it. Flower still shows the academy's name and the parameters (secrets
redacted) through ``kwargsrepr``. A publish that fails leaves the row for the sweep, never loses
it: the caller un-stamps what did not go (:func:`app.intake.submit.publish_or_release`).

Several jobs go out in one round trip to Redis (kombu's producer batch: one pipeline of
LPUSHes), not one each: the fairness feeder hands a window's worth of jobs to the broker at a
time while the worker it lives in is consuming. No task-sent event is sent for them (Celery's
default, and stock Celery's): Flower shows a job from the moment a worker receives it, and
what waits is in the table (``jobq jobs``, ``jobq stats``).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from app.broker.celery_app import celery_app
from app.broker.kombu_patch import to_the_front
from app.core.redaction import redact_params

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
        with celery_app.producer_or_acquire() as producer, _batch(producer, len(jobs)):
            queued = _send(producer, jobs)
        sent = queued  # a batch's pipeline runs as its block ends: all went, or none is counted
    except Exception as exc:  # broker down: the sweep publishes what is left
        log.warning(
            "broker refused %d of %d job(s); the sweep will publish them: %s",
            len(jobs) - len(sent), len(jobs), exc,
        )
    return sent


def _batch(producer, n: int):
    """One pipeline for several messages where the transport offers it (kombu 5.7's Redis)."""
    if n > 1 and hasattr(producer, "batch"):
        return producer.batch(max_size=n)
    return contextlib.nullcontext()


def _send(producer, jobs: Sequence[Outgoing]) -> list[str]:
    queued: list[str] = []
    for job in jobs:
        shown = {
            **({"academy": job.academy} if job.academy else {}),
            "tenant_id": job.tenant_id,
            "intent_params": redact_params(job.intent_params, job.secret_params),
        }
        with to_the_front() if job.front else contextlib.nullcontext():
            _send_one(producer, job, shown)
        queued.append(job.id)
    return queued


def _send_one(producer, job: Outgoing, shown: dict[str, Any]) -> None:
    celery_app.send_task(
        job.intent_key,
        kwargs=message_kwargs(job),
        task_id=job.id,
        queue=job.queue,
        countdown=job.countdown,
        producer=producer,
        kwargsrepr=repr(shown),
        add_to_parent=False,
        # The outcome lives in the table. Without this, a caller outside a worker
        # subscribes to a result channel per job, and while Redis is down that
        # subscription retries for ~20 s before the publish can fail.
        ignore_result=True,
    )
