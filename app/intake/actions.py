"""What operators (and callers) do to existing jobs: cancel one (its run is stopped where it
runs), see how a cancelled run ended, run failed or cancelled jobs again (optionally on
corrected parameters), and tell workers to forget the revokes a cancel left.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass

from app.broker.celery_app import celery_app
from app.store import db, jobstore

log = logging.getLogger("jobq.dispatch")


def cancel(job_id: str, *, reason: str = "cancelled", by: str = "api") -> str | None:
    """Cancel a pending or running job; the status it had, or None when it was neither.

    A pending job never runs. A running job's run is stopped by its own worker process within
    about a second, on every pool: at its next Python step (a call blocked in C code finishes
    first: a database statement, and on a threads-pool worker also a long sleep or network
    wait). Its uncommitted work is rolled back, and its end is recorded as a ``stopped`` event;
    :func:`run_stopped` waits for it.
    """
    job_id = str(uuid.UUID(str(job_id)))
    with db.engine().begin() as conn:
        was = jobstore.cancel(conn, job_id, reason=reason, by=by)
    if was is not None:
        # Drops a message not yet run. No ``terminate``: that signals whichever task the pool
        # process runs by then; the run's own process stops it (app.run.lease, app.run.stopping).
        celery_app.control.revoke(job_id)
        log.info("job cancelled (was %s)", was, extra={"job_id": job_id})
    return was


@dataclass(frozen=True)
class StoppedRun:
    """How the run of a job cancelled while it ran came to its end."""

    #: Seconds from the cancel to the run's end, by the database's clock.
    after: float
    worker: str | None
    #: True: the engine interrupted it. False: it finished first, and its outcome was discarded.
    interrupted: bool
    #: How long the run had been going.
    ran_seconds: float | None


def run_stopped(job_id: str, *, wait: float = 0.0) -> StoppedRun | None:
    """The end of a cancelled job's run, waiting up to ``wait`` seconds for it; None when it
    has not ended (yet), or when the job was not running when it was cancelled."""
    job_id = str(uuid.UUID(str(job_id)))
    deadline = time.monotonic() + wait
    while True:
        with db.engine().connect() as conn:
            found = jobstore.stopped_after_cancel(conn, job_id)
        if found is not None:
            after, worker, detail = found
            ran_ms = detail.get("ran_ms")
            return StoppedRun(after, worker, bool(detail.get("interrupted")),
                              None if ran_ms is None else ran_ms / 1000)
        if time.monotonic() >= deadline:
            return None
        time.sleep(0.05)



def forget_revoked(job_ids: Iterable[str]) -> None:
    """Let workers run these jobs again: a cancel revoked their ids, and a retried job keeps its id.

    Fire and forget: should a message overtake it and be dropped, the sweep sends it again.
    """
    ids = list(job_ids)
    if ids:
        try:
            celery_app.control.broadcast("jobq_forget_revoked", arguments={"ids": ids})
        except Exception as exc:
            log.warning("could not tell workers to forget %d revoke(s): %s", len(ids), exc)
