"""Retention: finished jobs past their academy's rule for their end state are deleted with their
events, one (academy, state) at a time, in keyset batches on ``ix_job_executions_expiry``."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from sqlalchemy import text

from app.core.settings import settings

#: The end states retention deletes, each with a rule of its own.
RETENTION_STATES = ("completed", "failed", "cancelled")

#: Before any row: a keyset cursor that lets the first batch start at the oldest.
RETENTION_START = (dt.datetime.min.replace(tzinfo=dt.UTC), "00000000-0000-0000-0000-000000000000")

#: Days a row in ``state`` of the tenant ``t`` is kept: its own rule, else the default.
_KEPT_DAYS = """
    CASE {c}.status WHEN 'completed' THEN coalesce({t}.keep_completed_days, :completed_days)
                    WHEN 'failed' THEN coalesce({t}.keep_failed_days, :failed_days)
                    ELSE coalesce({t}.keep_cancelled_days, :cancelled_days) END
"""

#: Each (academy, end state) with at least one row past its rule, found with one probe of the
#: index each (the oldest row of that state): the pairs with nothing to delete cost no batch.
EXPIRED_PAIRS = text(
    f"""
    SELECT r.id, r.status, r.days
      FROM (SELECT t.id::text AS id, s.status, {_KEPT_DAYS.format(c="s", t="t")} AS days, t.id AS tid
              FROM tenants t CROSS JOIN unnest(CAST(:states AS text[])) AS s(status)) r
     WHERE EXISTS (SELECT 1 FROM job_executions j
                    WHERE j.tenant_id = r.tid AND j.status = r.status
                      AND j.status IN ('completed', 'failed', 'cancelled')
                      AND j.completed_at < now() - make_interval(days => r.days))
     ORDER BY r.id, r.status
    """
)

#: One batch over several (academy, end state) pairs at once, each from its own keyset cursor
#: in index order, at most ``:per_pair`` rows of each (the rows read are locked, skipping any
#: another transaction holds): one statement for many small academies instead of one each. A
#: parent goes only when every child is past its own rule too, since the foreign key's cascade
#: would take the children with it; a parent kept for that is passed over and the cursor moves
#: past it. Returns, per pair, how many rows were read and deleted and the last row read (the
#: pair's next cursor).
DELETE_EXPIRED = text(
    f"""
    WITH p AS (
        SELECT * FROM unnest(CAST(:tenants AS uuid[]), CAST(:states AS text[]),
                             CAST(:days AS int[]), CAST(:after_at AS timestamptz[]),
                             CAST(:after_id AS uuid[]))
               AS p(tenant_id, status, days, after_at, after_id)
    ), scanned AS (
        SELECT j.*
          FROM p CROSS JOIN LATERAL (
                SELECT j.id, j.tenant_id, j.status, j.completed_at,
                       EXISTS (SELECT 1 FROM job_executions c
                                 JOIN tenants ct ON ct.id = c.tenant_id
                                WHERE c.parent_id = j.id
                                  AND NOT coalesce(
                                      c.status IN ('completed', 'failed', 'cancelled')
                                      AND c.completed_at < now() - make_interval(
                                          days => {_KEPT_DAYS.format(c="c", t="ct")}), false))
                           AS held
                  FROM job_executions j
                 WHERE j.tenant_id = p.tenant_id AND j.status = p.status
                   -- (said again in constants: what lets the planner use the partial index)
                   AND j.status IN ('completed', 'failed', 'cancelled')
                   AND j.completed_at < now() - make_interval(days => p.days)
                   AND (j.completed_at, j.id) > (p.after_at, p.after_id)
                 ORDER BY j.completed_at, j.id
                 LIMIT :per_pair
                   FOR UPDATE OF j SKIP LOCKED) j
    ), gone AS (
        DELETE FROM job_executions j USING scanned s WHERE j.id = s.id AND NOT s.held
    )
    -- (gone runs to completion unread, as every data-modifying WITH does; each row not held
    -- is locked by this statement, so it is deleted.)
    SELECT s.tenant_id::text, s.status, count(*) AS read,
           count(*) FILTER (WHERE NOT s.held) AS deleted,
           (array_agg(s.completed_at ORDER BY s.completed_at DESC, s.id DESC))[1] AS last_at,
           (array_agg(s.id::text ORDER BY s.completed_at DESC, s.id DESC))[1] AS last_id
      FROM scanned s
     GROUP BY s.tenant_id, s.status
    """
)


def default_retention_days(*, days: int | None = None,
                           failed_days: int | None = None) -> dict[str, int]:
    """Days each end state is kept by an academy without a rule of its own (``days`` and
    ``failed_days`` replace the settings)."""
    kept = days or settings.retention_days
    return {"completed": kept, "cancelled": kept,
            "failed": failed_days or settings.retention_failed_days}


@dataclass(frozen=True)
class RetentionBatch:
    read: int
    deleted: int
    #: The last row read, ``(completed_at, id)``: where the next batch starts.
    cursor: tuple[dt.datetime, str]


#: Compiling a batch's statement costs more than it saves (about 0.4 s).
_NO_JIT = text("SELECT set_config('jit', 'off', true)")


@dataclass
class Expired:
    """An (academy, end state) with rows past its rule, and how far retention has got."""

    tenant_id: str
    status: str
    #: Days its rule keeps a row.
    days: int
    #: The last row read, ``(completed_at, id)``: where its next batch starts.
    after: tuple[dt.datetime, str] = RETENTION_START


def expired_pairs(conn, defaults: Mapping[str, int]) -> list[Expired]:
    """Each (academy, end state) with something past its rule."""
    return [Expired(r[0], r[1], r[2])
            for r in conn.execute(EXPIRED_PAIRS, {"states": list(RETENTION_STATES), **_days(defaults)})]


def delete_expired(conn, pairs: Sequence[Expired], *, defaults: Mapping[str, int],
                   per_pair: int) -> dict[tuple[str, str], RetentionBatch]:
    """Delete one batch of each pair's rows (at most ``per_pair`` each) past its rule, from its
    cursor; a pair with nothing read is left out of the answer."""
    conn.execute(_NO_JIT)
    rows = conn.execute(DELETE_EXPIRED, {
        "tenants": [p.tenant_id for p in pairs], "states": [p.status for p in pairs],
        "days": [p.days for p in pairs], "after_at": [p.after[0] for p in pairs],
        "after_id": [p.after[1] for p in pairs], "per_pair": per_pair, **_days(defaults)})
    return {(r[0], r[1]): RetentionBatch(r[2], r[3], (r[4], r[5])) for r in rows}


def _days(defaults: Mapping[str, int]) -> dict[str, int]:
    return {f"{state}_days": defaults[state] for state in RETENTION_STATES}
