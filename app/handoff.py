"""The hand-off to the broker: every job's message reaches Redis through :func:`hand_off`.

One order on every path: the statement that decides a job goes now stamps its row published
(``published_at``: a caller's insert on the fast path, the feeder's pick, a capped academy's
hand-on, an approval, a retry riding a broker countdown, the sweep's republish); then the
message is sent; what the broker did not take is un-stamped, so the fairness feeder sends it
again in its turn (a stamp that cannot be cleared, the database being away too, is the sweep's
after ``JOBQ_REPUBLISH_AFTER``). Jobs asked for inside a caller's transaction wait for it:
:func:`after_commit`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import replace

from sqlalchemy import Connection, event
from sqlalchemy.orm import Session

from app.broker.publish import Outgoing, publish
from app.store import db, jobstore, tenants

log = logging.getLogger("jobq.publish")


def hand_off(jobs: Sequence[Outgoing], *, conn: Connection | None = None) -> list[str]:
    """Send ``jobs``, whose rows are stamped published already; return the ids the broker took.

    What it did not take is un-stamped: in ``conn`` when given (the caller's open transaction,
    committed with the rest of it), else in a transaction of its own. Never raises for a broker
    outage, nor, without ``conn``, for a database outage.
    """
    if not jobs:
        return []
    names = tenants.academy_names(j.tenant_id for j in jobs if j.academy is None)
    jobs = [replace(j, academy=names.get(j.tenant_id)) if j.academy is None else j for j in jobs]
    sent = publish(jobs)
    taken = set(sent)
    missed = [j.id for j in jobs if j.id not in taken]
    if missed and conn is not None:
        jobstore.mark_unpublished(conn, missed)
    elif missed:
        try:
            with db.engine().begin() as own:
                jobstore.mark_unpublished(own, missed)
        except Exception as exc:  # then the sweep's republish_after catches them
            log.warning("could not clear published_at of %d job(s): %s", len(missed), exc)
    return sent


# --- after a caller's commit -------------------------------------------------------------------

_AFTER_COMMIT = "jobq.hand_off_after_commit"


def after_commit(session: Session, jobs: Sequence[Outgoing]) -> None:
    """Hand ``jobs`` off once ``session`` commits; forgotten if it rolls back."""
    if jobs:
        session.info.setdefault(_AFTER_COMMIT, []).extend(jobs)


def forget_after_commit(session: Session) -> None:
    """Forget what :func:`after_commit` holds for ``session``: a savepoint that rolled back took
    their rows back (a whole rollback forgets them by itself)."""
    session.info.pop(_AFTER_COMMIT, None)


@event.listens_for(Session, "after_commit")
def _after_commit(session: Session) -> None:
    jobs = session.info.pop(_AFTER_COMMIT, None)
    if jobs:
        hand_off(jobs)


@event.listens_for(Session, "after_rollback")
def _after_rollback(session: Session) -> None:
    session.info.pop(_AFTER_COMMIT, None)
