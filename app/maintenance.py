"""Beat's own tasks: the table is the truth, these keep the broker in step with it.

``sweep_due_jobs`` publishes due pending rows that no broker holds (plain-SQL inserts, rows
whose publish failed, ``run_at`` and long retry backoffs, messages lost with Redis, jobs held
while their tenant was suspended);
``recover_lost_runs`` finds runs whose process died by their lapsed lease; ``fire_schedules``
turns due cron slots into jobs (:mod:`app.schedules`); ``apply_retention`` deletes old finished
jobs (:mod:`app.retention`).
"""

from __future__ import annotations

import functools
import logging
import time
from collections import defaultdict
from collections.abc import Callable

from app import audit, broker_client, db, retention, schedules
from app.celery_app import celery_app
from app.publish import Outgoing, publish
from app.registry import manifest
from app.settings import settings

log = logging.getLogger("jobq.maintenance")

#: Batches one sweep may publish before it yields to the next beat tick.
MAX_SWEEP_ROUNDS = 20


def broker_queue_size(queue: str) -> int | None:
    """Messages waiting in ``queue``, or None when the broker cannot say."""
    try:
        with celery_app.connection_for_read() as conn:
            return conn.default_channel.queue_declare(queue=queue, passive=True).message_count
    except Exception:
        return None


#: A key in the broker's Redis holding when its current data began (the database's clock).
BROKER_EPOCH = "broker-epoch"


def broker_epoch(conn) -> str | None:
    """When the broker's Redis began holding what it holds now; None when it cannot say.

    A Redis that restarted without its data (or was flushed) has lost the marker with the
    messages: the first sweep after that stamps a new epoch, and every pending row published
    before it is published again at once instead of after ``JOBQ_REPUBLISH_AFTER``. A message
    that did survive becomes a harmless duplicate (a claim runs a job once).
    """
    try:
        client = broker_client.client()
        key = broker_client.key(BROKER_EPOCH)
        epoch = client.get(key)
        if epoch is None:
            # The transaction's own start: what this sweep stamps on what it publishes.
            now, held = conn.execute(audit.PUBLISHED_PENDING).one()
            if client.set(key, now.isoformat(), nx=True):
                if held:
                    log.warning("the broker lost its data (no epoch marker in a new or emptied "
                                "Redis): %d pending job(s) it held are published again", held)
                else:
                    log.info("the broker's epoch begins (a new or emptied Redis); no pending "
                             "job was waiting in it")
            epoch = client.get(key)
    except Exception as exc:  # the broker is down: the publishing below fails anyway
        log.debug("broker epoch unknown: %s", exc)
        return None
    return epoch.decode() if isinstance(epoch, bytes) else epoch


def sweep_once(*, batch: int | None = None, republish_after: float | None = None) -> tuple[int, int]:
    """One batch: ``(locked, published)``."""
    batch = batch or settings.sweep_batch
    republish_after = settings.republish_after if republish_after is None else republish_after
    sizes: dict[str, int | None] = {}
    with db.engine().begin() as conn:
        due = audit.lock_due(conn, batch=batch, republish_after=republish_after,
                             broker_since=broker_epoch(conn))
        outgoing: list[Outgoing] = []
        for job in due:
            if job.tenant_status != "active":  # deleted (a suspended tenant's are held)
                audit.refuse_pending(conn, job.id,
                                     audit.tenant_refusal(job.tenant_id, job.tenant_status))
                log.warning("job refused: tenant is %s", job.tenant_status,
                            extra={"job_id": job.id, "tenant_id": job.tenant_id})
                continue
            intent = manifest.get(job.intent_key)
            if intent is None:
                hint = manifest.suggest(job.intent_key)
                audit.refuse_pending(
                    conn, job.id,
                    f"unknown intent key {job.intent_key!r}"
                    + (f" (did you mean {', '.join(map(repr, hint))}?)" if hint else ""),
                )
                log.error("job refused: unknown intent key %r", job.intent_key,
                          extra={"job_id": job.id, "tenant_id": job.tenant_id})
                continue
            queue = job.queue or intent.queue
            if job.republish and not job.lost:
                # Published long ago and never started: lost, unless its queue still has a
                # backlog that it is waiting in.
                if queue not in sizes:
                    sizes[queue] = broker_queue_size(queue)
                if sizes[queue]:
                    continue
            outgoing.append(Outgoing(job.id, job.tenant_id, job.intent_key, queue,
                                     job.intent_params, intent.secret_params))
        sent = set(publish(outgoing))
        by_queue: dict[str, list[str]] = defaultdict(list)
        for job in outgoing:
            if job.id in sent:
                by_queue[job.queue].append(job.id)
        for queue, ids in by_queue.items():
            audit.mark_published(conn, ids, queue=queue)
    republished = sum(1 for j in due if j.republish and j.id in sent)
    if sent:
        log.info("sweep published %d job(s) (%d again after a lost message)", len(sent),
                 republished)
    return len(due), len(sent)


#: Where each caretaking task notes that it ran and what it did (a Redis hash per task), for
#: ``jobq stats``: beat's tasks send no events, so they never crowd Flower's task list.
CARETAKER_KEY = "caretaker:"


def caretaking(fn: Callable[[], int]) -> Callable[[], int]:
    """Note each run of a caretaking task: when it ran, how long it took, how much it did."""

    @functools.wraps(fn)
    def run() -> int:
        started = time.time()
        acted = fn()
        try:
            client = broker_client.client()
            key = broker_client.key(CARETAKER_KEY + fn.__name__)
            pipe = client.pipeline(transaction=False)
            pipe.hset(key, mapping={"last_at": started, "last_ms": (time.time() - started) * 1000,
                                    **({"last_acted_at": started} if acted else {})})
            pipe.hincrby(key, "runs", 1)
            pipe.hincrby(key, "acted", acted)
            pipe.execute()
        except Exception as exc:  # a note about the work must never fail the work
            log.debug("could not note the %s run: %s", fn.__name__, exc)
        return acted

    return run


def caretaker_notes() -> dict[str, dict[str, float]]:
    """What each caretaking task last noted: ``{task: {last_at, last_ms, runs, acted, ...}}``."""
    client = broker_client.client()
    names = ("sweep_due_jobs", "recover_lost_runs", "fire_schedules", "apply_retention")
    pipe = client.pipeline(transaction=False)
    for name in names:
        pipe.hgetall(broker_client.key(CARETAKER_KEY + name))
    return {name: {k.decode(): float(v) for k, v in found.items()}
            for name, found in zip(names, pipe.execute(), strict=True) if found}


# Caretaking tasks send no task events (``send_events=False``): Flower is for the academies'
# jobs, and beat's ticks (several a second) would push them off its first page.
_CARETAKING = {"queue": "maintenance", "ignore_result": True, "acks_late": False,
               "send_events": False}


@celery_app.task(name="jobq.sweep_due_jobs", **_CARETAKING)
@caretaking
def sweep_due_jobs() -> int:
    """Publish due pending jobs that no broker holds; safe to run in many places at once."""
    total = 0
    for _ in range(MAX_SWEEP_ROUNDS):
        locked, published = sweep_once()
        total += published
        if locked < settings.sweep_batch:
            break
    return total


def recover_once(*, batch: int = 500) -> list[audit.Released]:
    with db.engine().begin() as conn:
        released = audit.release_expired(conn, batch=batch,
                                         default_max_retries=settings.default_max_retries,
                                         lease=settings.lease_seconds)
    for job in released:
        log.warning(
            "job lost by %s on attempt %d: %s", job.worker or "an unknown worker", job.attempt,
            "will run again" if job.status == "pending" else "failed, no retries left",
            extra={"job_id": job.id, "attempt": job.attempt},
        )
    return released


@celery_app.task(name="jobq.recover_lost_runs", **_CARETAKING)
@caretaking
def recover_lost_runs() -> int:
    """Runs whose lease lapsed go back to pending (the sweep sends them) or fail."""
    return len(recover_once())


@celery_app.task(name="jobq.fire_schedules", **_CARETAKING)
@caretaking
def fire_schedules() -> int:
    """Turn every due schedule slot into its jobs; reads the table afresh on each tick."""
    return sum(outcome.jobs for outcome in schedules.fire_due())


@celery_app.task(name="jobq.apply_retention", **_CARETAKING)
@caretaking
def apply_retention() -> int:
    """Delete finished jobs (and their events) older than the retention age, in batches."""
    return retention.delete_expired().jobs
