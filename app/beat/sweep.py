"""The sweep: the table is the truth, and this keeps the broker and the fair queue in step.

Waiting jobs are the fairness feeder's (app.run.feeder): the sweep routes plain-SQL inserts
(no queue) to their intent's queue, wakes the fair queue for tenants whose ``run_at``, retry
backoff or suspension has passed, publishes again what a Redis lost with its data (noticed by
the broker's epoch marker) or what was published long ago and never started, and refuses jobs
of a deleted tenant or an unknown intent.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict

from app.broker import client as broker_client
from app.broker import held as broker_held
from app.broker.celery_app import celery_app
from app.broker.publish import Outgoing
from app.core.registry import manifest
from app.core.settings import settings
from app.core.validation import unknown_intent
from app.handoff import hand_off
from app.store import db, jobstore

log = logging.getLogger("jobq.maintenance")

#: Batches one sweep may publish before it yields to the next beat tick.
MAX_SWEEP_ROUNDS = 20
#: Idle academies are woken from the jobs that came due in the last NEWLY_DUE_SECONDS (an
#: index of jobs waiting for a time: as few as came due), and from the whole backlog once every
#: FULL_WAKE_SECONDS per process, and at its first sweep (a tenant resumed wakes its own, see
#: app.intake.actions): a sweep no longer reads the backlog and probes the fair queue once per
#: academy in it every second (1,000 index scans a second behind 3,000 jobs of 1,000 academies).
NEWLY_DUE_SECONDS = 120.0
FULL_WAKE_SECONDS = 60.0
_next_full_wake = 0.0


def broker_queue_size(queue: str) -> int | None:
    """Messages waiting in ``queue``, or None when the broker cannot say."""
    try:
        with celery_app.connection_for_read() as conn:
            return conn.default_channel.queue_declare(queue=queue, passive=True).message_count
    except Exception:
        return None


#: Messages read per queue when a new epoch's lost jobs are looked for in the broker.
PRESENT_LIMIT = 1000


def in_the_broker(queues: list[str]) -> set[str] | None:
    """The job ids whose message the broker holds now, waiting in one of ``queues`` or taken by a
    worker; None when it cannot say (a queue longer than was read, the broker away)."""
    try:
        snapshot = broker_held.snapshot(queues, limit=PRESENT_LIMIT)
    except Exception:
        return None
    present = {h.job_id for h in snapshot.held}
    for ids in snapshot.waiting.values():
        if ids is None:
            return None
        present |= ids
    return present


#: A key in the broker's Redis holding when its current data began (the database's clock).
BROKER_EPOCH = "broker-epoch"
#: Beside it, the run id of the Redis server the last sweep talked to.
BROKER_SERVER = "broker-server"


def broker_epoch(conn) -> str | None:
    """When the broker's Redis began holding what it holds now; None when it cannot say.

    A Redis that restarted without its data (or was flushed) has lost the marker with the
    messages: the first sweep after that stamps a new epoch, and every pending row published
    before it is published again at once instead of after ``JOBQ_REPUBLISH_AFTER``, unless
    the broker holds its message after all (:func:`in_the_broker`: a caller's fast path
    published into a new Redis before any sweep stamped its epoch). A Redis that is another
    server than the last sweep saw (a Sentinel failover to a replica, which may lack the last
    writes and holds workers' unacknowledged messages out of reach, or a restart from its
    append-only file) gets a new epoch too. A message that did survive and is not seen
    becomes a harmless duplicate (a claim runs a job once).
    """
    try:
        client = broker_client.client()
        key = broker_client.key(BROKER_EPOCH)
        server = str(client.info("server")["run_id"])
        # Atomic: of several sweeps at once, one sees the change of server.
        previous = client.getset(broker_client.key(BROKER_SERVER), server)
        previous = previous.decode() if isinstance(previous, bytes) else previous
        epoch = client.get(key)
        if epoch is None or (previous is not None and previous != server):
            # The transaction's own start: what this sweep stamps on what it publishes.
            now, held = conn.execute(jobstore.PUBLISHED_PENDING).one()
            if epoch is not None:
                client.set(key, now.isoformat())
                log.warning("the broker's Redis is another server than before (a failover or "
                            "a restart): %d pending job(s) published before are published "
                            "again unless it holds them", held)
            elif client.set(key, now.isoformat(), nx=True):
                if held:
                    log.warning("the broker lost its data (no epoch marker in a new or emptied "
                                "Redis): %d pending job(s) published before are published again "
                                "unless it holds them", held)
                else:
                    log.info("the broker's epoch begins (a new or emptied Redis); no pending "
                             "job was waiting in it")
            epoch = client.get(key)
    except Exception as exc:  # the broker is down: the publishing below fails anyway
        log.debug("broker epoch unknown: %s", exc)
        return None
    return epoch.decode() if isinstance(epoch, bytes) else epoch


def sweep_once(*, batch: int | None = None, republish_after: float | None = None) -> tuple[int, int]:
    """One batch: ``(locked, published or routed)``."""
    batch = batch or settings.sweep_batch
    republish_after = settings.republish_after if republish_after is None else republish_after
    sizes: dict[str, int | None] = {}
    routes: dict[str, list[str]] = defaultdict(list)
    with db.engine().begin() as conn:
        due = jobstore.lock_due(conn, batch=batch, republish_after=republish_after,
                             broker_since=broker_epoch(conn))
        outgoing: list[Outgoing] = []
        # Published before a new epoch: lost, unless the broker holds the message after all (a
        # caller's fast path published into a new Redis before any sweep stamped its epoch:
        # sent twice, each job of the first drain ran its claim twice).
        lost_queues = sorted({j.queue for j in due if j.lost and j.queue})
        present = (in_the_broker(lost_queues) if lost_queues else None) or set()
        for job in due:
            if job.tenant_status != "active":  # deleted (a suspended tenant's are held)
                jobstore.refuse_pending(conn, job.id,
                                     jobstore.tenant_refusal(job.tenant_id, job.tenant_status))
                log.warning("job refused: tenant is %s", job.tenant_status,
                            extra={"job_id": job.id, "tenant_id": job.tenant_id})
                continue
            intent = manifest.get(job.intent_key)
            if intent is None:
                jobstore.refuse_pending(conn, job.id, unknown_intent(job.intent_key, manifest))
                log.error("job refused: unknown intent key %r", job.intent_key,
                          extra={"job_id": job.id, "tenant_id": job.tenant_id})
                continue
            queue = job.queue or intent.queue
            if not job.republish:  # inserted without a queue: it waits its turn there
                routes[queue].append(job.id)
                continue
            if job.lost and job.id in present:
                continue
            if not job.lost:
                # Published long ago and never started: lost, unless its queue still has a
                # backlog that it is waiting in.
                if queue not in sizes:
                    sizes[queue] = broker_queue_size(queue)
                if sizes[queue]:
                    continue
            outgoing.append(Outgoing(job.id, job.tenant_id, job.intent_key, queue,
                                     job.intent_params, intent.secret_params))
        for queue, ids in routes.items():
            jobstore.route(conn, ids, queue)
        by_queue: dict[str, list[str]] = defaultdict(list)
        for out in outgoing:
            by_queue[out.queue].append(out.id)
        for queue, ids in by_queue.items():  # stamped first, as on every path (app.handoff)
            jobstore.mark_published(conn, ids, queue=queue)
        sent = hand_off(outgoing, conn=conn)
        woken = jobstore.flag_due(conn, newly=_wake_window())
    routed = sum(len(ids) for ids in routes.values())
    if sent:
        log.info("sweep published %d job(s) again after a lost message", len(sent))
    if routed or woken:
        log.info("sweep routed %d job(s) inserted without a queue; %d idle tenant queue(s) "
                 "have due jobs again", routed, sum(woken.values()))
    return len(due), len(sent) + routed


def _wake_window() -> float | None:
    """NEWLY_DUE_SECONDS, or None (the whole backlog) when this process's full look is due."""
    global _next_full_wake
    now = time.monotonic()
    if now < _next_full_wake:
        return NEWLY_DUE_SECONDS
    _next_full_wake = now + FULL_WAKE_SECONDS
    return None


def sweep() -> int:
    """Route, wake and republish (see the module), a batch at a time, at most
    :data:`MAX_SWEEP_ROUNDS` batches; safe to run in many places at once."""
    total = 0
    for _ in range(MAX_SWEEP_ROUNDS):
        locked, published = sweep_once()
        total += published
        if locked < settings.sweep_batch:
            break
    return total
