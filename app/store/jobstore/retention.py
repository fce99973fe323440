"""Retention: finished jobs past their age are deleted with their events, a batch at a time."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import Text, bindparam, text
from sqlalchemy.dialects.postgresql import ARRAY

_FINISHED_AND_OLD = """
    {t}.status IN ('completed', 'failed', 'cancelled')
    AND {t}.completed_at < now() - make_interval(
        days => CASE WHEN {t}.status = 'failed' THEN :failed_days ELSE :days END)
"""

#: One batch of finished jobs past their retention age (failed ones are kept longer), deleted
#: with their events by the foreign keys' cascade. A parent goes only when every child is old
#: enough too, since the cascade would take the children with it.
DELETE_EXPIRED = text(
    f"""
    WITH doomed AS (
        SELECT j.id
          FROM job_executions j
         WHERE j.status = ANY(:statuses)
           AND j.completed_at < now() - make_interval(days => :older_than_days)
           AND NOT EXISTS (
                SELECT 1 FROM job_executions c
                 WHERE c.parent_id = j.id
                   AND NOT coalesce({_FINISHED_AND_OLD.format(t="c")}, false))
         ORDER BY j.completed_at
         LIMIT :batch
           FOR UPDATE OF j SKIP LOCKED
    )
    DELETE FROM job_executions j USING doomed WHERE j.id = doomed.id
    """
).bindparams(bindparam("statuses", type_=ARRAY(Text())))


def delete_expired(conn, *, statuses: Sequence[str], older_than_days: int, days: int,
                   failed_days: int, batch: int) -> int:
    """Delete one batch of jobs in ``statuses`` finished more than ``older_than_days`` ago."""
    return conn.execute(
        DELETE_EXPIRED,
        {"statuses": list(statuses), "older_than_days": older_than_days, "days": days,
         "failed_days": failed_days, "batch": batch},
    ).rowcount
