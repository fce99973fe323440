"""Approvals that did not come in time: a job awaiting one past its ``approval_expires_at``
(``JOBQ_APPROVAL_EXPIRES`` after it was asked for) is cancelled with an ``expired`` event."""

from __future__ import annotations

import logging

from app.store import db, jobstore

log = logging.getLogger("jobq.maintenance")


def expire_once(*, batch: int = 500) -> list[str]:
    with db.engine().begin() as conn:
        expired = jobstore.expire_approvals(conn, batch=batch)
    for job_id in expired:
        log.info("approval expired: job cancelled", extra={"job_id": job_id})
    return expired
