"""A day's spans of the hourly rollup (migration 0023): per academy, and per intent and end
state, the day (UTC) from its start up to each rolled hour and from each to its end, each made
from the hour's rows added to the span next to it (:func:`make_spans`, in the roll's
transaction, under a lock of the day). Read by :mod:`app.store.rollup`'s ``cover``."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

from sqlalchemy import text

from app.store import liveness

#: A day's spans (migration 0023), made from its rolled hours' rows: per academy, the day
#: (UTC) from its start up to and with the hour (4) and from the hour to its end (5); per
#: intent and end state likewise (6, 7; all queues together). A window that crosses midnight
#: reads its first day's rolled hours as one span row and its last day's as another, and a
#: whole day in between as the span to its last hour: two rows an academy for ``--since 24h``.
TENANT_PREFIX, TENANT_SUFFIX, INTENT_PREFIX, INTENT_SUFFIX = 4, 5, 6, 7
_H = dt.timedelta(hours=1)


#: Only one transaction makes a day's rows at a time (jobq's other locks, 'jobr', then the day):
#: a span made while another roll of that day is under way would miss the other's hour.
LOCK_DAY = text(f"SELECT pg_advisory_xact_lock({liveness.OTHER_NAMESPACE}, "
                "1000000 + CAST(:days AS int))")

#: A day's span row per academy at the hour ``:k``: the hour's own rows added to the span
#: they extend (``:base``: the span at the rolled hour before it, from the day's start, or the
#: one after it, to the day's end; NULL for the first), two rows an academy, not the day's hours.
TENANT_SPAN = text(
    """
    WITH gone AS (DELETE FROM job_stats_hourly WHERE level = :level AND hour = :k),
    s AS MATERIALIZED (
        SELECT tenant_id, n, retries, run_max, wait_b, wait_n FROM job_stats_hourly
         WHERE (level = 2 AND hour = :k)
            OR (level = :level AND hour = CAST(:base AS timestamptz))),
    w AS (SELECT s.tenant_id, u.b, CAST(sum(u.c) AS int) AS c
            FROM s, unnest(s.wait_b, s.wait_n) AS u(b, c) GROUP BY 1, 2)
    INSERT INTO job_stats_hourly (hour, level, tenant_id, n, retries, run_max, wait_b, wait_n)
    SELECT :k, :level, t.tenant_id, t.n, t.retries, t.run_max,
           coalesce(h.bs, '{}'), coalesce(h.cs, '{}')
      FROM (SELECT tenant_id, sum(n) AS n, sum(retries) AS retries, max(run_max) AS run_max
              FROM s GROUP BY 1) t
      LEFT JOIN (SELECT tenant_id, array_agg(b ORDER BY b) AS bs, array_agg(c ORDER BY b) AS cs
                   FROM w GROUP BY 1) h ON h.tenant_id = t.tenant_id
     ORDER BY t.tenant_id
    """
)

#: The same per intent and end state (all queues together), with the run times too.
INTENT_SPAN = text(
    """
    WITH gone AS (DELETE FROM job_stats_hourly WHERE level = :level AND hour = :k),
    s AS MATERIALIZED (
        SELECT intent_key, status, n, retries, run_max, run_b, run_n, wait_b, wait_n
          FROM job_stats_hourly
         WHERE (level = 1 AND hour = :k)
            OR (level = :level AND hour = CAST(:base AS timestamptz))),
    r AS (SELECT s.intent_key, s.status, u.b, CAST(sum(u.c) AS int) AS c
            FROM s, unnest(s.run_b, s.run_n) AS u(b, c) GROUP BY 1, 2, 3),
    w AS (SELECT s.intent_key, s.status, u.b, CAST(sum(u.c) AS int) AS c
            FROM s, unnest(s.wait_b, s.wait_n) AS u(b, c) GROUP BY 1, 2, 3)
    INSERT INTO job_stats_hourly (hour, level, intent_key, status, n, retries, run_max,
                                  run_b, run_n, wait_b, wait_n)
    SELECT :k, :level, t.intent_key, t.status, t.n, t.retries, t.run_max,
           coalesce(rh.bs, '{}'), coalesce(rh.cs, '{}'), coalesce(wh.bs, '{}'),
           coalesce(wh.cs, '{}')
      FROM (SELECT intent_key, status, sum(n) AS n, sum(retries) AS retries,
                   max(run_max) AS run_max
              FROM s GROUP BY 1, 2) t
      LEFT JOIN (SELECT intent_key, status, array_agg(b ORDER BY b) AS bs,
                        array_agg(c ORDER BY b) AS cs FROM r GROUP BY 1, 2) rh
             ON rh.intent_key = t.intent_key AND rh.status = t.status
      LEFT JOIN (SELECT intent_key, status, array_agg(b ORDER BY b) AS bs,
                        array_agg(c ORDER BY b) AS cs FROM w GROUP BY 1, 2) wh
             ON wh.intent_key = t.intent_key AND wh.status = t.status
     ORDER BY t.intent_key, t.status
    """
)

#: The day's hours: which are rolled, when, and when their spans were made.
DAY_HOURS = text(
    """
    SELECT hour, rolled, rolled_at, prefix_at, suffix_at FROM job_stats_hours
     WHERE hour >= :day AND hour < :day + interval '1 day' ORDER BY hour
    """
)

UNSPAN = text("UPDATE job_stats_hours SET prefix_at = NULL, suffix_at = NULL "
              "WHERE hour >= :day AND hour < :day + interval '1 day' "
              "AND (prefix_at IS NOT NULL OR suffix_at IS NOT NULL)")

SPANNED = text(
    """
    UPDATE job_stats_hours
       SET prefix_at = CASE WHEN hour = ANY(CAST(:prefix AS timestamptz[]))
                            THEN clock_timestamp() ELSE prefix_at END,
           suffix_at = CASE WHEN hour = ANY(CAST(:suffix AS timestamptz[]))
                            THEN clock_timestamp() ELSE suffix_at END
     WHERE hour = ANY(CAST(:prefix AS timestamptz[])) OR hour = ANY(CAST(:suffix AS timestamptz[]))
    """
)

def day_of(hour: dt.datetime) -> dt.datetime:
    """The start of the UTC day an hour belongs to."""
    return hour.astimezone(dt.UTC).replace(hour=0, minute=0, second=0, microsecond=0)


def lock_day(conn, day: dt.datetime) -> None:
    conn.execute(LOCK_DAY, {"days": (day - dt.datetime(1970, 1, 1, tzinfo=dt.UTC)).days})


def make_spans(conn, day: dt.datetime, hour: dt.datetime | None = None) -> None:
    """Make the day's spans that hold ``hour`` again (all of them when None) from its rolled
    hours' rows, in the caller's transaction: the spans to each rolled hour from the day's
    start, and, once the day's last hour is rolled, from each to its end. Each is the hour's
    rows added to the span next to it, in order, starting from the nearest span that still
    stands for its hours (or from the day's first or last rolled hour). Each is stamped with
    the clock as it is made, which a reader compares with its hours' ``rolled_at`` (a span made
    before an hour's roll does not stand for it)."""
    lock_day(conn, day)
    hours = [r for r in conn.execute(DAY_HOURS, {"day": day}) if r.rolled]
    if not hours:
        return
    at = [r.hour for r in hours]

    def stands(i: int, stamp: str, reach: Sequence[Any]) -> bool:
        made = getattr(hours[i], stamp)
        return made is not None and all(r.rolled_at <= made for r in reach)

    # From the day's start: from the first rolled hour at or after ``hour``, back to the
    # nearest span that stands.
    first = 0 if hour is None else next((i for i, h in enumerate(at) if h >= hour), len(at))
    while first > 0 and not stands(first - 1, "prefix_at", hours[:first]):
        first -= 1
    prefix = list(range(first, len(at)))
    # To the day's end, once its last hour is rolled: from the last rolled hour at or before
    # ``hour``, forward to the nearest span that stands.
    suffix: list[int] = []
    if at[-1].astimezone(dt.UTC) == day + 23 * _H:
        last = len(at) - 1 if hour is None else max(
            (i for i, h in enumerate(at) if h <= hour), default=-1)
        while last >= 0 and last < len(at) - 1 and not stands(last + 1, "suffix_at",
                                                              hours[last + 1:]):
            last += 1
        suffix = list(range(last, -1, -1))
    for statement, level, order, step in (
            (TENANT_SPAN, TENANT_PREFIX, prefix, -1), (INTENT_SPAN, INTENT_PREFIX, prefix, -1),
            (TENANT_SPAN, TENANT_SUFFIX, suffix, 1), (INTENT_SPAN, INTENT_SUFFIX, suffix, 1)):
        for i in order:
            base = at[i + step] if 0 <= i + step < len(at) else None
            conn.execute(statement, {"k": at[i], "base": base, "level": level})
    conn.execute(SPANNED, {"prefix": [at[i] for i in prefix], "suffix": [at[i] for i in suffix]})


