"""Finished jobs rolled up per hour of their finish (migration 0020): written by beat's caretaking
(:func:`claim` then :func:`roll_hour`), read by the statistics (:mod:`app.store.window_stats`).

An hour is claimed once it is :data:`LATE` past its end, and rolled once every transaction
that began before the claim has ended: a job written into it after that either began after the
claim (its finish is then more than :data:`LATE` back, and the trigger of 0020 counts a change
of the hour) or was already visible to the roll. A changed hour is read from the jobs until it
is rolled again. Each roll replaces the hour's rows in one transaction and subtracts the
changes it read, so a change that lands during a roll leaves the hour changed for the next.
"""

from __future__ import annotations

import datetime as dt
import json
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import text

from app.core import sketch

#: A finish this far back when its row is written counts as a change of its (rolled) hour;
#: the trigger of migration 0020 says the same.
LATE = dt.timedelta(minutes=5)
#: Rolled hours are kept this long, long after the jobs themselves (retention deletes those).
KEEP_DAYS = 400
#: Levels of ``job_stats_hourly``: per intent, queue and state over all academies; per academy
#: over all intents. (Per academy and intent would be a row a job or two where many academies
#: send a little: an academy's own figures come from its jobs, on the retention index.)
BY_INTENT, BY_TENANT = 1, 2
#: (Level 3, per academy over four hours, 00:00, 04:00, ... UTC, is made from its level-2 hours
#: once all four are rolled, by REBLOCK: a day's window reads about eight rows an academy.)

#: Claims every hour not claimed yet from the first finish there is (within KEEP_DAYS) to the
#: last hour that is LATE past its end (old history imported later is claimed too).
#: ``claimed_at`` is the clock when the row is written, just before the statement commits.
CLAIM = text(
    """
    INSERT INTO job_stats_hours (hour)
    SELECT h
      FROM generate_series(
               greatest((SELECT date_trunc('hour', min(completed_at), 'UTC') FROM job_executions
                          WHERE status IN ('completed', 'failed', 'cancelled')),
                        date_trunc('hour', now() - make_interval(days => :keep), 'UTC')),
               date_trunc('hour', now() - interval '1 hour' - CAST(:late AS interval), 'UTC'),
               interval '1 hour') AS h
    ON CONFLICT DO NOTHING
    """
)

#: Hours to roll, oldest first: never rolled, or changed since. Only once every other client
#: transaction of the database began after the hour's claim (and a second more, for the
#: claim's own commit).
DUE = text(
    """
    SELECT hour FROM job_stats_hours
     WHERE (NOT rolled OR changes > 0)
       AND claimed_at + interval '1 second' < coalesce(
           (SELECT min(xact_start) FROM pg_stat_activity
             WHERE datname = current_database() AND pid <> pg_backend_pid()
               AND backend_type = 'client backend' AND xact_start IS NOT NULL), 'infinity')
     ORDER BY hour
     LIMIT :limit
    """
)

#: One hour's finished jobs, grouped as finely as the rollup needs.
HOUR_GROUPS = text(
    f"""
    SELECT tenant_id::text AS tenant_id, intent_key, queue, status, run_b, wait_b,
           count(*) AS n, coalesce(sum(retry_count), 0) AS retries, max(run_s) AS run_max
      FROM (SELECT r.*, {sketch.SQL_BUCKET.format(seconds="r.run_s")} AS run_b,
                   {sketch.SQL_BUCKET.format(seconds="r.wait_s")} AS wait_b
              FROM (SELECT j.tenant_id, j.intent_key, j.queue, j.status, j.retry_count,
                           CASE WHEN j.status = 'completed'
                                THEN date_part('epoch', j.completed_at - j.executed_at) END
                               AS run_s,
                           date_part('epoch', j.executed_at - coalesce(j.run_at, j.created_at))
                               AS wait_s
                      FROM job_executions j
                     WHERE j.status IN ('completed', 'failed', 'cancelled')
                       AND j.completed_at >= :hour
                       AND j.completed_at < :hour + interval '1 hour'
                    OFFSET 0) r) s
     GROUP BY 1, 2, 3, 4, 5, 6
    """
)

REPLACE = text(
    """
    WITH gone AS (DELETE FROM job_stats_hourly WHERE hour = :hour AND level IN (1, 2))
    INSERT INTO job_stats_hourly (hour, level, tenant_id, intent_key, queue, status, n, retries,
                                  run_max, run_b, run_n, wait_b, wait_n)
    SELECT :hour, r.level, r.tenant_id, r.intent_key, r.queue, r.status, r.n, r.retries,
           r.run_max, r.run_b, r.run_n, r.wait_b, r.wait_n
      FROM jsonb_to_recordset(CAST(:rows AS jsonb)) AS r(
               level smallint, tenant_id uuid, intent_key text, queue text, status text,
               n bigint, retries bigint, run_max float8, run_b int[], run_n int[], wait_b int[],
               wait_n int[])
    """
)

#: The four-hour block's rows per academy, made again from its hours' when all four are rolled
#: and unchanged (else none: a reader then takes the hours one by one).
REBLOCK = text(
    """
    WITH gone AS (DELETE FROM job_stats_hourly WHERE hour = :block AND level = 3),
    s AS (SELECT tenant_id, n, retries, run_max, wait_b, wait_n FROM job_stats_hourly
           WHERE level = 2 AND hour >= :block AND hour < :block + interval '4 hours'
             AND (SELECT count(*) FROM job_stats_hours
                   WHERE hour >= :block AND hour < :block + interval '4 hours'
                     AND rolled AND changes = 0) = 4),
    w AS (SELECT s.tenant_id, u.b, CAST(sum(u.c) AS int) AS c
            FROM s, unnest(s.wait_b, s.wait_n) AS u(b, c) GROUP BY 1, 2)
    INSERT INTO job_stats_hourly (hour, level, tenant_id, n, retries, run_max, wait_b, wait_n)
    SELECT :block, 3, t.tenant_id, t.n, t.retries, t.run_max,
           coalesce(h.bs, '{}'), coalesce(h.cs, '{}')
      FROM (SELECT tenant_id, sum(n) AS n, sum(retries) AS retries, max(run_max) AS run_max
              FROM s GROUP BY 1) t
      LEFT JOIN (SELECT tenant_id, array_agg(b ORDER BY b) AS bs, array_agg(c ORDER BY b) AS cs
                   FROM w GROUP BY 1) h ON h.tenant_id = t.tenant_id
     ORDER BY t.tenant_id
    """
)

#: The hour's row, locked for its roll (another caretaker rolling it is left to it): changes
#: written meanwhile wait for the roll and count afterwards.
LOCK_HOUR = text(
    """
    SELECT changes FROM job_stats_hours
     WHERE hour = :hour AND (NOT rolled OR changes > 0)
       FOR UPDATE SKIP LOCKED
    """
)

ROLLED = text(
    """
    UPDATE job_stats_hours
       SET rolled = true, changes = changes - :changes, rolled_at = now(), jobs = :jobs
     WHERE hour = :hour
    """
)

FORGET = text("DELETE FROM job_stats_hours WHERE hour < now() - make_interval(days => :days)")

#: The hours whose rollup stands for them now (rolled, nothing changed since) in a range.
USABLE = text(
    """
    SELECT hour FROM job_stats_hours
     WHERE rolled AND changes = 0
       AND (CAST(:lo AS timestamptz) IS NULL OR hour >= CAST(:lo AS timestamptz))
       AND (CAST(:hi AS timestamptz) IS NULL OR hour < CAST(:hi AS timestamptz))
     ORDER BY hour
    """
)


@dataclass
class _Group:
    n: int = 0
    retries: int = 0
    run_max: float | None = None
    run: dict[int, int] = field(default_factory=dict)
    wait: dict[int, int] = field(default_factory=dict)

    def add(self, r: Any) -> None:
        self.n += r.n
        self.retries += r.retries
        if r.run_max is not None:
            self.run_max = r.run_max if self.run_max is None else max(self.run_max, r.run_max)
        if r.run_b is not None:
            self.run[r.run_b] = self.run.get(r.run_b, 0) + r.n
        if r.wait_b is not None:
            self.wait[r.wait_b] = self.wait.get(r.wait_b, 0) + r.n

    def row(self, level: int, key: Sequence[str | None]) -> dict[str, Any]:
        run, wait = sorted(self.run), sorted(self.wait)
        return {"level": level, "tenant_id": key[0], "intent_key": key[1], "queue": key[2],
                "status": key[3], "n": self.n, "retries": self.retries,
                "run_max": self.run_max, "run_b": run, "run_n": [self.run[b] for b in run],
                "wait_b": wait, "wait_n": [self.wait[b] for b in wait]}


def claim(conn) -> int:
    """Claim the hours now old enough to roll; how many were claimed."""
    return conn.execute(CLAIM, {"late": f"{int(LATE.total_seconds())} seconds",
                                "keep": KEEP_DAYS}).rowcount


def due(conn, *, limit: int) -> list[dt.datetime]:
    return [r.hour for r in conn.execute(DUE, {"limit": limit})]


def roll_hour(conn, hour: dt.datetime) -> int | None:
    """Replace the hour's rollup with what its finished jobs say now, in the caller's
    transaction; how many jobs it holds (None: rolled already, or another caretaker has it)."""
    changes = conn.execute(LOCK_HOUR, {"hour": hour}).scalar()
    if changes is None:
        return None
    levels: dict[int, dict[tuple, _Group]] = {BY_INTENT: defaultdict(_Group),
                                              BY_TENANT: defaultdict(_Group)}
    jobs = 0
    for r in conn.execute(HOUR_GROUPS, {"hour": hour}):
        jobs += r.n
        levels[BY_INTENT][(None, r.intent_key, r.queue, r.status)].add(r)
        levels[BY_TENANT][(r.tenant_id, None, None, None)].add(r)
    # A level's rows side by side in the table: a read of one level reads its own pages.
    rows = [g.row(level, key) for level, groups in levels.items()
            for key, g in sorted(groups.items(), key=lambda kv: str(kv[0]))]
    conn.execute(REPLACE, {"hour": hour, "rows": json.dumps(rows)})
    conn.execute(ROLLED, {"hour": hour, "changes": changes, "jobs": jobs})
    conn.execute(REBLOCK, {"block": block_of(hour)})
    return jobs


def block_of(hour: dt.datetime) -> dt.datetime:
    """The start of the four-hour block (UTC) an hour belongs to."""
    hour = hour.astimezone(dt.UTC)
    return hour.replace(hour=hour.hour - hour.hour % 4, minute=0, second=0, microsecond=0)


def blocks_and_hours(hours: list[dt.datetime]) -> tuple[list[dt.datetime], list[dt.datetime]]:
    """The four-hour blocks all of whose hours are among ``hours``, and the hours left over."""
    have = {h.astimezone(dt.UTC) for h in hours}
    blocks = sorted({b for b in map(block_of, have)
                     if all(b + k * dt.timedelta(hours=1) in have for k in range(4))})
    whole = set(blocks)
    return blocks, sorted(h for h in have if block_of(h) not in whole)


def forget_old(conn, *, days: int = KEEP_DAYS) -> int:
    return conn.execute(FORGET, {"days": days}).rowcount


def usable_hours(conn, lo: dt.datetime | None, hi: dt.datetime | None) -> list[dt.datetime]:
    return [r.hour for r in conn.execute(USABLE, {"lo": lo, "hi": hi})]
