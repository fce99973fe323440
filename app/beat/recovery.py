"""Lost-run recovery: a run whose process died (its liveness lock is free, or, for an owner
without one, its lease lapsed) goes back to pending (the sweep sends it) or fails with "worker
lost", its lost attempt recorded (and, traced, shown as a span of its job's trace).
"""

from __future__ import annotations

import logging

from app.core.settings import settings
from app.run import spans
from app.store import db, jobstore

log = logging.getLogger("jobq.maintenance")


def recover_once(*, batch: int = 500) -> list[jobstore.Released]:
    with db.engine().begin() as conn:
        released = jobstore.release_expired(conn, batch=batch,
                                         default_max_retries=settings.default_max_retries,
                                         lease=settings.lease_seconds,
                                         wedged=settings.visibility_timeout)
    for job in released:
        log.warning(
            "job lost by %s on attempt %d: %s", job.worker or "an unknown worker", job.attempt,
            "will run again" if job.status == "pending" else "failed, no retries left",
            extra={"job_id": job.id, "attempt": job.attempt},
        )
    spans.lost(released)
    return released
