"""A worker's task events (what Flower shows) go to Redis in batches, with a real prefork worker:
every job's events arrive, in order, but in one publish per EVENT_BATCH_SECONDS at most, not one
per job (app.broker.consumer). Seen as Flower sees them: the event channel, subscribed to."""

from __future__ import annotations

import base64
import json
import threading
import time

import pytest

from app.broker import client as broker_client
from app.broker.consumer import EVENT_BATCH_SECONDS
from app.core.settings import settings
from app.core.validation import Request
from app.intake.submit import submit_many
from app.store import db
from tests.fixtures import wait_for

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("fresh_queues")]

JOBS = 150


def _events(message: dict) -> list[dict]:
    """The events in one published event message (a batch is a list of them)."""
    body = json.loads(message["data"])
    events = json.loads(base64.b64decode(body["body"]))
    return events if isinstance(events, list) else [events]


def test_task_events_reach_flower_in_batches_every_job_in_order(tenant, start_worker_process):
    pubsub = broker_client.client().pubsub(ignore_subscribe_messages=True)
    pubsub.psubscribe(f"{settings.redis_key_prefix}/*.celeryev/task.*")
    publishes: list[tuple[float, list[dict]]] = []
    stop = threading.Event()

    def listen() -> None:
        while not stop.is_set():
            message = pubsub.get_message(timeout=0.1)
            if message is not None:
                publishes.append((time.monotonic(), _events(message)))

    listener = threading.Thread(target=listen, daemon=True)
    listener.start()
    try:
        start_worker_process("-P", "prefork", "-c", "2", "-E", queues="realtime")
        with db.session() as session:
            ids = set(submit_many(session, [Request(tenant, "system.exec.echo", {"n": i})
                                            for i in range(JOBS)]))
            session.commit()

        def kinds_of(job: str) -> list[str]:
            return [e["type"] for _, batch in publishes for e in batch
                    if e.get("uuid") == job]

        wait_for(lambda: all("task-succeeded" in kinds_of(j) for j in ids), 60,
                 message=f"task-succeeded events of all {JOBS} jobs")
    finally:
        stop.set()
        listener.join(5)
        pubsub.close()
    for job in ids:
        kinds = kinds_of(job)
        assert kinds.index("task-received") < kinds.index("task-started") \
            < kinds.index("task-succeeded"), (job, kinds)
    ours = [(at, batch) for at, batch in publishes if any(e.get("uuid") in ids for e in batch)]
    span = ours[-1][0] - ours[0][0]
    events = sum(len(batch) for _, batch in ours)
    # One publish per batch interval at most (a full buffer of 24 goes at once, and a batch may
    # start just before the first and end just after the last): before, about one per job.
    full = sum(1 for _, batch in ours if len(batch) >= 24)
    assert len(ours) <= span / EVENT_BATCH_SECONDS + 2 + full, (len(ours), span, events)
    assert events >= 3 * JOBS
