"""Finished jobs rolled up per hour of their finish (migration 0020): written by beat's caretaking
(:func:`claim` then :func:`roll_hour`), read by the statistics (:mod:`app.store.window_stats`).

An hour is claimed once it is :data:`LATE` past its end, and rolled once every transaction
that began before the claim has ended: a job written into it after that either began after the
claim (its finish is then more than :data:`LATE` back, and the trigger of 0020 counts a change
of the hour) or was already visible to the roll. A changed hour is read from the jobs until it
is rolled again. Each roll replaces the hour's rows in one transaction and subtracts the
changes it read, so a change that lands during a roll leaves the hour changed for the next.

The same transaction makes the spans of the hour's day that hold it again (migration 0023,
:func:`make_spans`, under a lock of the day): a window's rolled hours are then read as a span
row a key for each day it crosses (:func:`cover`), and a day whose span would stand for a
changed hour, or for one rolled after it was made, is read hour by hour instead.
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
from app.store.rollup_spans import UNSPAN, day_of, lock_day, make_spans

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
#: once all four are rolled, by REBLOCK. Levels 4-7, a day's spans: app/store/rollup_spans.py.)
#: Spans are kept for the days this recent (a week's window, and today); older days are read
#: as four-hour blocks and hours.
SPAN_DAYS = 8
#: Each hour of the last two days is also kept in ten-minute parts (levels 8 per intent and end
#: state, 9 per academy; ``part`` 0-5), made with the hour: a window whose start falls within
#: such an hour reads the parts after its start, and from the jobs only the minutes before the
#: next part.
INTENT_PARTS, TENANT_PARTS = 8, 9
PART = dt.timedelta(minutes=10)
PART_DAYS = 2
_DAY = dt.timedelta(days=1)

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
    SELECT tenant_id::text AS tenant_id, intent_key, queue, status, run_b, wait_b, part,
           count(*) AS n, coalesce(sum(retry_count), 0) AS retries, max(run_s) AS run_max
      FROM (SELECT r.*, {sketch.SQL_BUCKET.format(seconds="r.run_s")} AS run_b,
                   {sketch.SQL_BUCKET.format(seconds="r.wait_s")} AS wait_b
              FROM (SELECT j.tenant_id, j.intent_key, j.queue, j.status, j.retry_count,
                           CAST(floor(date_part('epoch', j.completed_at - :hour) / 600) AS int)
                               AS part,
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
     GROUP BY 1, 2, 3, 4, 5, 6, 7
    """
)

REPLACE = text(
    """
    WITH gone AS (DELETE FROM job_stats_hourly WHERE hour = :hour AND level IN (1, 2, 8, 9))
    INSERT INTO job_stats_hourly (hour, level, tenant_id, intent_key, queue, status, part, n,
                                  retries, run_max, run_b, run_n, wait_b, wait_n)
    SELECT :hour, r.level, r.tenant_id, r.intent_key, r.queue, r.status, r.part, r.n,
           r.retries, r.run_max, r.run_b, r.run_n, r.wait_b, r.wait_n
      FROM jsonb_to_recordset(CAST(:rows AS jsonb)) AS r(
               level smallint, tenant_id uuid, intent_key text, queue text, status text,
               part smallint, n bigint, retries bigint, run_max float8, run_b int[],
               run_n int[], wait_b int[], wait_n int[])
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
     WHERE hour = :hour AND (NOT rolled OR changes > 0 OR :again)
       FOR UPDATE SKIP LOCKED
    """
)

ROLLED = text(
    """
    UPDATE job_stats_hours
       SET rolled = true, changes = changes - :changes, rolled_at = now(), jobs = :jobs,
           parts_at = CASE WHEN :parts THEN now() END
     WHERE hour = :hour
    """
)

#: Whole days only: a day's spans stand for its hours.
FORGET = text("DELETE FROM job_stats_hours "
              "WHERE hour < date_trunc('day', now() - make_interval(days => :days), 'UTC')")

#: Recent days with a rolled hour whose spans were never made (history rolled before 0023, or
#: spans forgotten): the newest first.
SPANS_DUE = text(
    """
    SELECT DISTINCT date_trunc('day', hour, 'UTC') AS day FROM job_stats_hours
     WHERE rolled AND prefix_at IS NULL
       AND hour >= date_trunc('day', now(), 'UTC') - make_interval(days => :days)
     ORDER BY 1 DESC LIMIT :limit
    """
)

#: Recent hours rolled without their ten-minute parts (before 0023): the newest first.
PARTS_DUE = text(
    """
    SELECT hour FROM job_stats_hours
     WHERE rolled AND changes = 0 AND parts_at IS NULL
       AND hour >= date_trunc('day', now(), 'UTC') - make_interval(days => :days)
     ORDER BY hour DESC LIMIT :limit
    """
)

#: Ten-minute parts of hours no longer recent: their rows and their stamps.
FORGET_PARTS = text(
    """
    WITH gone AS (DELETE FROM job_stats_hourly
                   WHERE level IN (8, 9)
                     AND hour < date_trunc('day', now(), 'UTC') - make_interval(days => :days))
    UPDATE job_stats_hours SET parts_at = NULL
     WHERE hour < date_trunc('day', now(), 'UTC') - make_interval(days => :days)
       AND parts_at IS NOT NULL
    """
)

#: Spans of days no longer recent: their rows and their stamps.
FORGET_SPANS = text(
    """
    WITH gone AS (DELETE FROM job_stats_hourly
                   WHERE level IN (4, 5, 6, 7)
                     AND hour < date_trunc('day', now(), 'UTC') - make_interval(days => :days))
    UPDATE job_stats_hours SET prefix_at = NULL, suffix_at = NULL
     WHERE hour < date_trunc('day', now(), 'UTC') - make_interval(days => :days)
       AND (prefix_at IS NOT NULL OR suffix_at IS NOT NULL)
    """
)

#: The hours claimed in a range: whether their rollup stands for them now (rolled, nothing
#: changed since), when they were rolled and when their spans were made.
HOURS = text(
    """
    SELECT hour, rolled AND changes = 0 AS usable, rolled AND changes > 0 AS changed, rolled_at,
           prefix_at, suffix_at, parts_at
      FROM job_stats_hours
     WHERE (CAST(:lo AS timestamptz) IS NULL OR hour >= CAST(:lo AS timestamptz))
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

    def row(self, level: int, key: Sequence[Any]) -> dict[str, Any]:
        run, wait = sorted(self.run), sorted(self.wait)
        return {"level": level, "tenant_id": key[0], "intent_key": key[1], "queue": key[2],
                "status": key[3], "part": key[4] if len(key) > 4 else None, "n": self.n,
                "retries": self.retries,
                "run_max": self.run_max, "run_b": run, "run_n": [self.run[b] for b in run],
                "wait_b": wait, "wait_n": [self.wait[b] for b in wait]}


def claim(conn) -> int:
    """Claim the hours now old enough to roll; how many were claimed."""
    return conn.execute(CLAIM, {"late": f"{int(LATE.total_seconds())} seconds",
                                "keep": KEEP_DAYS}).rowcount


def due(conn, *, limit: int) -> list[dt.datetime]:
    return [r.hour for r in conn.execute(DUE, {"limit": limit})]


def roll_hour(conn, hour: dt.datetime, *, again: bool = False) -> int | None:
    """Replace the hour's rollup with what its finished jobs say now, in the caller's
    transaction; how many jobs it holds (None: rolled already, unless ``again``, or another
    caretaker has it)."""
    lock_day(conn, day_of(hour))
    changes = conn.execute(LOCK_HOUR, {"hour": hour, "again": again}).scalar()
    if changes is None:
        return None
    levels: dict[int, dict[tuple, _Group]] = {
        level: defaultdict(_Group) for level in (BY_INTENT, BY_TENANT, INTENT_PARTS, TENANT_PARTS)}
    parts = day_of(hour) >= _today() - PART_DAYS * _DAY
    jobs = 0
    for r in conn.execute(HOUR_GROUPS, {"hour": hour}):
        jobs += r.n
        levels[BY_INTENT][(None, r.intent_key, r.queue, r.status)].add(r)
        levels[BY_TENANT][(r.tenant_id, None, None, None)].add(r)
        if parts:
            levels[INTENT_PARTS][(None, r.intent_key, None, r.status, r.part)].add(r)
            levels[TENANT_PARTS][(r.tenant_id, None, None, None, r.part)].add(r)
    # A level's rows side by side in the table: a read of one level reads its own pages.
    rows = [g.row(level, key) for level, groups in levels.items()
            for key, g in sorted(groups.items(), key=lambda kv: str(kv[0]))]
    conn.execute(REPLACE, {"hour": hour, "rows": json.dumps(rows)})
    conn.execute(ROLLED, {"hour": hour, "changes": changes, "jobs": jobs, "parts": parts})
    conn.execute(REBLOCK, {"block": block_of(hour)})
    if day_of(hour) >= _today() - SPAN_DAYS * _DAY:
        make_spans(conn, day_of(hour), hour)
    else:  # (spans the reader must not take for this day's hours any longer)
        conn.execute(UNSPAN, {"day": day_of(hour)})
    return jobs


def _today() -> dt.datetime:
    return day_of(dt.datetime.now(dt.UTC))


def parts_due(conn, *, limit: int) -> list[dt.datetime]:
    return [r.hour for r in conn.execute(PARTS_DUE, {"days": PART_DAYS, "limit": limit})]


def spans_due(conn, *, limit: int) -> list[dt.datetime]:
    return [r.day for r in conn.execute(SPANS_DUE, {"days": SPAN_DAYS, "limit": limit})]


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
    conn.execute(FORGET_SPANS, {"days": SPAN_DAYS})
    conn.execute(FORGET_PARTS, {"days": PART_DAYS})
    return conn.execute(FORGET, {"days": days}).rowcount


@dataclass
class Cover:
    """How a window's rolled hours are read: ``hours`` (all of them, the rest of the window is
    read from the jobs), the span rows to read (``prefix`` and ``suffix``: the hours they are
    stamped at) and the hours read one by one (``singles``)."""

    hours: list[dt.datetime]
    prefix: list[dt.datetime]
    suffix: list[dt.datetime]
    singles: list[dt.datetime]
    #: The hour before ``lo`` (the window's partial first hour) when its ten-minute parts stand
    #: for it (rolled, unchanged, its parts made at its roll).
    parts: dt.datetime | None = None


def cover(conn, lo: dt.datetime | None, hi: dt.datetime | None,
          first: dt.datetime | None = None) -> Cover:
    """The rolled hours within ``[lo, hi)`` (whole hours) and the rows that stand for them;
    and whether the parts of the hour ``first`` (the one before ``lo``) stand for it."""
    rows = list(conn.execute(HOURS, {"lo": first or lo, "hi": hi}))
    got = plan([r for r in rows if first is None or r.hour >= lo], lo, hi)
    for r in rows:
        if first is not None and r.hour == first and r.usable and r.parts_at is not None \
                and r.parts_at >= r.rolled_at:
            got.parts = first
    return got


def plan(rows: Sequence[Any], lo: dt.datetime | None, hi: dt.datetime | None) -> Cover:
    """:func:`cover` from the hours' rows (``hour``, ``usable``, ``changed``, ``rolled_at``,
    ``prefix_at``, ``suffix_at``, in hour order). A day's span stands for its hours when the
    window holds its whole reach, none of those hours changed since its roll and none was
    rolled after the span was made; else the day's hours are read one by one."""
    hours = [r.hour for r in rows if r.usable]
    days: dict[dt.datetime, list[Any]] = defaultdict(list)
    for r in rows:
        days[day_of(r.hour)].append(r)
    prefix: list[dt.datetime] = []
    suffix: list[dt.datetime] = []
    singles: list[dt.datetime] = []
    for day, rs in days.items():
        whole_start = lo is None or day >= lo
        whole_end = hi is None or day + _DAY <= hi
        usable = [r for r in rs if r.usable]
        if not usable:
            continue
        if whole_start:  # from the day's start: the span to its last rolled hour
            last = usable[-1]
            reach = [r for r in rs if r.hour <= last.hour]
            stamp, at, out = last.prefix_at, last.hour, prefix
        elif whole_end:  # to the day's end: the span from its first rolled hour in the window
            first = usable[0]
            reach = [r for r in rs if r.hour >= first.hour]
            stamp, at, out = first.suffix_at, first.hour, suffix
        else:
            stamp = None
        if stamp is not None and all(not r.changed and (r.rolled_at is None or r.rolled_at <= stamp)
                                     for r in reach):
            out.append(at)
        else:
            singles.extend(r.hour for r in usable)
    return Cover(hours, sorted(prefix), sorted(suffix), sorted(singles))


def usable_hours(conn, lo: dt.datetime | None, hi: dt.datetime | None) -> list[dt.datetime]:
    return cover(conn, lo, hi).hours
