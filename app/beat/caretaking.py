"""How beat's caretaking shows without crowding Flower: each task notes in Redis when it ran,
how long it took and how much it did; ``jobq stats`` reads the notes."""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable

from app.broker import client as broker_client

log = logging.getLogger("jobq.maintenance")

#: Where each caretaking task notes that it ran and what it did (a Redis hash per task), for
#: ``jobq stats``: beat's tasks send no events, so they never crowd Flower's task list.
CARETAKER_KEY = "caretaker:"
CARETAKERS = ("sweep_due_jobs", "recover_lost_runs", "expire_approvals", "fire_schedules",
              "apply_retention", "roll_up_stats")


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
    names = CARETAKERS
    pipe = client.pipeline(transaction=False)
    for name in names:
        pipe.hgetall(broker_client.key(CARETAKER_KEY + name))
    return {name: {k.decode(): float(v) for k, v in found.items()}
            for name, found in zip(names, pipe.execute(), strict=True) if found}
