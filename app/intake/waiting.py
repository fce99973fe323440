"""Why a job waits: one answer for the console, `jobq job ID` and the API's job.

:func:`why_waiting` reads the job's facts (app.store.waiting) and asks the workers which queues
they consume; :func:`explain` turns both into reasons, each a code and a sentence, in the order
the engine meets them: approval, the academy's status, run_at, the broker's window, the cap,
the fair order, and whether any worker serves the queue at all.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import threading
import time
from dataclasses import dataclass
from typing import Any

from app.store import db
from app.store.waiting import COUNT_CAP, wait_facts

#: Seconds the queues the workers consume are remembered (one broadcast per this, per process).
SERVED_TTL_SECONDS = 10.0
#: How long the workers are given to say which queues they consume.
INSPECT_TIMEOUT = 0.5
#: The most a caller that waits for the answer (`jobq job`) waits, the broker's connection
#: included.
WAIT_SECONDS = 1.5

WAITING_STATUSES = ("pending", "awaiting_approval")


@dataclass(frozen=True)
class Reason:
    """One reason a job waits: ``code`` for programs, ``text`` for people."""

    code: str
    text: str

    def as_dict(self) -> dict[str, str]:
        return {"code": self.code, "text": self.text}


_served: tuple[float, frozenset[str] | None] = (0.0, None)
_served_lock = threading.Lock()
_asking = threading.Lock()


def _ask_workers() -> frozenset[str] | None:
    global _served
    found = None
    with contextlib.suppress(Exception):
        from app.broker.celery_app import celery_app

        replies = celery_app.control.inspect(timeout=INSPECT_TIMEOUT).active_queues() or {}
        found = frozenset(q["name"] for queues in replies.values() for q in queues or ())
    with _served_lock:
        _served = (time.monotonic(), found)
    return found


def _ask_in_background() -> threading.Thread | None:
    """Ask the workers in a thread of its own (None: one is asking already)."""
    if not _asking.acquire(blocking=False):
        return None

    def ask() -> None:
        try:
            _ask_workers()
        finally:
            _asking.release()

    thread = threading.Thread(target=ask, name="jobq-served-queues", daemon=True)
    thread.start()
    return thread


def served_queues(*, wait: bool = True) -> frozenset[str] | None:
    """The queues some live worker consumes (None: not known, the broker did not answer),
    remembered for SERVED_TTL_SECONDS. ``wait=False`` (a server's page) never waits for the
    workers: it answers what it knew and asks again in the background."""
    with _served_lock:
        at, found = _served
    age = time.monotonic() - at if at else None
    if age is not None and age < SERVED_TTL_SECONDS:
        return found
    asked = _ask_in_background()
    if wait and asked is not None:
        # A broker that does not answer (Redis down) would hold the caller for its connection
        # retries: it gets "not known" after WAIT_SECONDS instead.
        asked.join(WAIT_SECONDS)
        with _served_lock:
            at, found = _served
        return found if at and time.monotonic() - at < SERVED_TTL_SECONDS else None
    return found if age is not None and age < 3 * SERVED_TTL_SECONDS else None


def _count(n: int) -> str:
    return f"{n:,}+" if n >= COUNT_CAP else f"{n:,}"


def _in(seconds: float) -> str:
    seconds = max(0, int(seconds))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60} min"


def _at(value: dt.datetime) -> str:
    return value.isoformat(timespec="seconds")


def explain(facts: dict[str, Any], served: frozenset[str] | None) -> list[Reason]:
    """Why the job these facts describe waits (empty when it does not wait)."""
    status = facts["status"]
    academy = facts.get("tenant_name") or facts["tenant_id"]
    out: list[Reason] = []
    if status == "awaiting_approval":
        by = f" (asked by {facts['requested_by']})" if facts.get("requested_by") else ""
        until = (f" until {_at(facts['approval_expires_at'])}"
                 if facts.get("approval_expires_at") else "")
        out.append(Reason("awaiting_approval", f"it waits for a person's approval{by}{until}"))
    if status not in WAITING_STATUSES:
        return out
    if facts["tenant_status"] != "active":
        out.append(Reason("academy_suspended",
                          f"academy {academy} is {facts['tenant_status']}: its jobs do not run "
                          "until it is resumed"))
    if status != "pending":
        return out
    queue = facts.get("queue")
    now = facts["db_now"]
    if queue is None:
        out.append(Reason("unrouted", "it has no queue yet: beat's sweep routes rows written "
                                      "with plain SQL within about a second"))
        return out
    if facts["due"] > now and facts.get("last_event") == "waiting" and facts.get("error_message"):
        # A wait the job itself asked for (an academy's daily quota on a channel): its reason.
        out.append(Reason("waiting_for", f"it {facts['error_message']}" if
                          facts["error_message"].startswith("waits") else
                          f"{facts['error_message']}: it is due at {_at(facts['due'])}, in "
                          f"{_in((facts['due'] - now).total_seconds())}"))
    elif facts["due"] > now:
        retrying = " (a retry's backoff)" if facts.get("error_message") else ""
        out.append(Reason("run_at_future",
                          f"it is due at {_at(facts['due'])}{retrying}, in "
                          f"{_in((facts['due'] - now).total_seconds())}"))
    if facts.get("published_at") is not None:
        flying = facts.get("in_flight")
        ahead = f" with {_count(flying)} job(s) handed over in that queue" if flying else ""
        out.append(Reason("handed_to_worker",
                          f"it was handed to the broker at {_at(facts['published_at'])}{ahead}: "
                          f"it starts when a worker of queue {queue} takes it"))
    cap, busy = facts.get("cap"), facts.get("busy")
    if cap is not None and busy is not None and busy >= cap:
        where = f"on queue {queue}" if facts.get("per_queue") else "across queues"
        out.append(Reason("academy_at_cap",
                          f"academy {academy} is at its cap: {busy} of at most {cap} jobs "
                          f"running or handed to a worker {where}"))
    own, others = facts.get("own_ahead"), facts.get("academies_ahead")
    if own or others:
        parts = []
        if own:
            parts.append(f"{_count(own)} older job(s) of its own academy")
        if others:
            parts.append(f"{_count(others)} other academ{'y' if others == 1 else 'ies'} whose "
                         "turn comes first")
        out.append(Reason("behind_in_fair_order",
                          f"it is behind {' and '.join(parts)} in queue {queue}'s fair order"))
    if served is not None and queue not in served:
        out.append(Reason("no_worker",
                          f"no worker consumes queue {queue}: start one "
                          f"(jobq run, or celery -A app worker -Q {queue})"))
    if not out and facts.get("published_at") is None and facts["due"] <= now:
        out.append(Reason("next", f"it is next in queue {queue}: the feeder hands it over as "
                                  "the queue's window has room"))
    return out


def why_waiting(job_id: str, *, wait: bool = True) -> list[Reason]:
    """Why ``job_id`` waits, read now. Call it only for a job the caller may see: it reads on
    the engine's own connection (the counts span academies, as aggregates). ``wait=False``
    never waits for the workers to say which queues they consume (:func:`served_queues`)."""
    with db.engine().connect() as conn:
        facts = wait_facts(conn, job_id)
    if facts is None or facts["status"] not in WAITING_STATUSES:
        return []
    needs_workers = facts["status"] == "pending" and facts.get("queue") is not None
    return explain(facts, served_queues(wait=wait) if needs_workers else None)
