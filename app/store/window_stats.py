"""The statistics of a window (`jobq stats`): finished jobs by when they finished, jobs waiting
or running by when they were asked for, per intent and overall, and the academies whose jobs
waited longest.

Finished jobs come from two places: the hours beat has rolled up (:mod:`app.store.rollup`; a
day's rolled hours within the window are one span row per intent and academy, however many
jobs finished in them) and, for the rest of the window (its partial first hour, the last hour
or two, any hour not rolled or changed since), the jobs themselves on the finished-at index.
So the cost follows what the window holds in rows of the rollup, not the jobs of the window
nor the history before it. The academies' histograms are added up, and their percentiles
read, in the database: only the academies shown come back.
Counts are exact; run times and waits are log-bucket histograms (app.core.sketch) that add up
across hours, their percentiles within app.core.sketch.RELATIVE_ERROR.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import bindparam, text

from app.core import sketch
from app.store import rollup
from app.store.reads import _TEXTS, CREATED_FILTERS, WHO_FILTERS, JobFilter

#: For the statistics, in the caller's transaction: no JIT (compiling costs about 100 ms a
#: statement, more than it saves) and room to aggregate the window's rows in memory.
_FOR_STATISTICS = text("SELECT set_config('jit', 'off', true), "
                       "set_config('work_mem', '64MB', true), now()")

_LIVE = "('pending', 'processing', 'awaiting_approval')"
_COLUMNS = """
    j.intent_key, j.tenant_id, j.status, j.retry_count,
    CASE WHEN j.status = 'completed' THEN date_part('epoch', j.completed_at - j.executed_at) END
        AS run_s,
    date_part('epoch', j.executed_at - coalesce(j.run_at, j.created_at)) AS wait_s
"""

#: Which grouping set a LIVE_STATS row belongs to (``grouping()`` of its five columns: a bit
#: set for each column the set leaves out, the first column the highest bit).
_BY_INTENT, _BY_INTENT_WAIT, _BY_TENANT = 0b01001, 0b01110, 0b10010
_STATES = {"pending": "pending", "processing": "processing", "completed": "completed",
           "failed": "failed", "cancelled": "cancelled", "awaiting_approval": "awaiting"}
_HOUR = dt.timedelta(hours=1)

#: The jobs the rollup does not stand for, in one read grouped three ways: by intent, state and
#: run-time bucket (counts, retries, the longest run); by intent and wait bucket; by tenant,
#: state and wait bucket. Those finished within the ``:los``/``:his`` ranges (each on the
#: finished-at index) and those waiting or running that were asked for within the window.
LIVE_STATS = text(
    f"""
    SELECT grouping(intent_key, tenant_id, status, run_b, wait_b) AS g,
           intent_key, tenant_id::text AS tenant_id, status, run_b, wait_b,
           count(*) AS n, coalesce(sum(retry_count), 0) AS retries, max(run_s) AS run_max
      FROM (
        SELECT r.*, {sketch.SQL_BUCKET.format(seconds="r.run_s")} AS run_b,
               {sketch.SQL_BUCKET.format(seconds="r.wait_s")} AS wait_b
          FROM (SELECT f.* FROM unnest(CAST(:los AS timestamptz[]),
                                       CAST(:his AS timestamptz[])) AS w(lo, hi)
                CROSS JOIN LATERAL (
                    SELECT {_COLUMNS} FROM job_executions j
                     WHERE j.status IN ('completed', 'failed', 'cancelled')
                       AND j.completed_at >= w.lo AND j.completed_at < w.hi
                       AND {WHO_FILTERS}) f
                UNION ALL
                SELECT {_COLUMNS} FROM job_executions j
                 WHERE j.status IN {_LIVE} AND {WHO_FILTERS} AND {CREATED_FILTERS}
                OFFSET 0) r
      ) s
     GROUP BY GROUPING SETS ((intent_key, status, run_b), (intent_key, wait_b),
                             (tenant_id, status, wait_b))
    """
).bindparams(bindparam("statuses", type_=_TEXTS))

#: The rolled rows per intent and state: the window's day spans (levels 6, 7), the hours
#: read one by one (level 1; a few dozen rows an hour) and the ten-minute parts of its partial
#: first hour from ``:part`` on (8): added up here.
ROLLED_INTENTS = text(
    """
    SELECT s.intent_key, s.status, s.n, s.retries, s.run_max, s.run_b, s.run_n, s.wait_b,
           s.wait_n
      FROM job_stats_hourly s
     WHERE (s.level = 6 AND s.hour = ANY(CAST(:prefix AS timestamptz[])))
        OR (s.level = 7 AND s.hour = ANY(CAST(:suffix AS timestamptz[])))
        OR (s.level = 1 AND s.hour = ANY(CAST(:hours AS timestamptz[])))
        OR (s.level = 8 AND s.hour = CAST(:parts AS timestamptz) AND s.part >= :part)
    """
)

#: The rolled rows per academy: the window's day spans (levels 4, 5), of the other hours its
#: four-hour blocks where whole (3) and the hours left over (2), and the ten-minute parts of
#: the window's partial first hour from ``:part`` on (9).
_TENANT_ROWS = """
    SELECT s.tenant_id, s.n, s.wait_b, s.wait_n FROM job_stats_hourly s
     WHERE (s.level = 4 AND s.hour = ANY(CAST(:prefix AS timestamptz[])))
        OR (s.level = 5 AND s.hour = ANY(CAST(:suffix AS timestamptz[])))
        OR (s.level = 3 AND s.hour = ANY(CAST(:blocks AS timestamptz[])))
        OR (s.level = 2 AND s.hour = ANY(CAST(:hours AS timestamptz[])))
        OR (s.level = 9 AND s.hour = CAST(:parts AS timestamptz) AND s.part >= :part)
"""


def _value(b: str) -> str:
    """app.core.sketch.value in SQL: the duration bucket ``b`` stands for."""
    return (f"CASE WHEN {b} <= 0 THEN CAST({sketch.FLOOR_SECONDS!r} AS float8) "
            f"ELSE CAST({sketch.FLOOR_SECONDS!r} AS float8) * power(CAST(2 AS float8), "
            f"(CAST({b} AS float8) + 0.5) / {sketch.BUCKETS_PER_DOUBLING}) END")


def _percentile(q: float) -> str:
    """app.core.sketch.percentile in SQL, as an aggregate over a histogram's rows ``b`` (its
    bucket), ``seen`` (the count up to and with it, in bucket order) and ``span`` (the whole
    count less one): the same operations in double precision, so the same number."""
    pos = f"(CAST({q!r} AS float8) * span)"
    lower = f"min(b) FILTER (WHERE seen > floor({pos}))"
    upper = (f"min(b) FILTER (WHERE seen > floor({pos}) "
             f"+ CASE WHEN {pos} > floor({pos}) THEN 1 ELSE 0 END)")
    frac = f"max({pos} - floor({pos}))"
    return f"{_value(lower)} + ({_value(upper)} - {_value(lower)}) * {frac}"


#: One read of what is not rolled (LIVE_STATS) and of the academies' rolled rows, merged here:
#: the live rows grouped by intent (``tenant_id`` NULL), then the ``:tenants`` academies whose
#: jobs waited longest (p95, then the most jobs), each with its counts and its wait's p50/p95
#: from its histogram added up over the window (``g`` NULL). An academy's histogram never
#: leaves the database: a thousand academies are ten rows.
STATS = text(
    f"""
    WITH live AS MATERIALIZED ({LIVE_STATS.text}),
    rolled AS MATERIALIZED ({_TENANT_ROWS}),
    waits AS (
        SELECT tenant_id, b, CAST(sum(c) AS int) AS c
          FROM (SELECT CAST(tenant_id AS uuid) AS tenant_id, wait_b AS b, CAST(n AS int) AS c
                  FROM live
                 WHERE g = {_BY_TENANT} AND wait_b IS NOT NULL
                UNION ALL
                SELECT r.tenant_id, u.b, u.c FROM rolled r, unnest(r.wait_b, r.wait_n) AS u(b, c)
               ) w
         GROUP BY 1, 2
    ),
    seen AS (
        SELECT tenant_id, b, sum(c) OVER (PARTITION BY tenant_id ORDER BY b) AS seen,
               CAST(sum(c) OVER (PARTITION BY tenant_id) AS float8) - 1 AS span
          FROM waits
    ),
    pct AS (
        SELECT tenant_id, {_percentile(0.5)} AS p50, {_percentile(0.95)} AS p95
          FROM seen GROUP BY 1
    ),
    counts AS (
        SELECT tenant_id, sum(n) AS total, sum(pending) AS pending
          FROM (SELECT CAST(tenant_id AS uuid) AS tenant_id, CAST(n AS int) AS n,
                       CASE WHEN status = 'pending' THEN CAST(n AS int) ELSE 0 END AS pending
                  FROM live WHERE g = {_BY_TENANT}
                UNION ALL
                SELECT tenant_id, CAST(n AS int), 0 FROM rolled) c
         GROUP BY 1
    ),
    top AS (
        SELECT c.tenant_id, c.total, c.pending, p.p50, p.p95
          FROM counts c LEFT JOIN pct p ON p.tenant_id = c.tenant_id
         ORDER BY p.p95 DESC NULLS LAST, c.total DESC, c.tenant_id
         LIMIT :tenants
    )
    SELECT g, intent_key, NULL AS tenant_id, NULL AS name, status, run_b, wait_b, n, retries,
           run_max, NULL AS pending, NULL AS p50, NULL AS p95
      FROM live WHERE g <> {_BY_TENANT}
    UNION ALL
    SELECT NULL, NULL, CAST(t.tenant_id AS text), n.name, NULL, NULL, NULL, t.total, NULL, NULL,
           t.pending, t.p50, t.p95
      FROM top t LEFT JOIN tenants n ON n.id = t.tenant_id
    """
).bindparams(bindparam("statuses", type_=_TEXTS))



def _stats_row(key: str | None) -> dict[str, Any]:
    return {"intent_key": key, "total": 0, **dict.fromkeys(_STATES.values(), 0), "retries": 0,
            "run_max": None, "_run": {}, "_wait": {}}


def _add(h: dict[int, int], buckets, counts) -> None:
    for b, c in zip(buckets or (), counts or (), strict=True):
        h[b] = h.get(b, 0) + c


def _count(row: dict[str, Any], status: str, n: int, retries: int,
           run_max: float | None) -> None:
    row["total"] += n
    row["retries"] += retries
    if status in _STATES:
        row[_STATES[status]] += n
    if run_max is not None:
        row["run_max"] = max(row["run_max"] or 0.0, run_max)


def _finish(row: dict[str, Any]) -> dict[str, Any]:
    run, wait = row.pop("_run"), row.pop("_wait")
    row.update(run_p50=sketch.percentile(run, 0.5), run_p95=sketch.percentile(run, 0.95),
               wait_p50=sketch.percentile(wait, 0.5), wait_p95=sketch.percentile(wait, 0.95))
    return row


def _ceil_hour(t: dt.datetime) -> dt.datetime:
    floor = t.astimezone(dt.UTC).replace(minute=0, second=0, microsecond=0)
    return floor if floor == t else floor + _HOUR


def _floor_hour(t: dt.datetime) -> dt.datetime:
    return t.astimezone(dt.UTC).replace(minute=0, second=0, microsecond=0)


def _window(where: JobFilter, now: dt.datetime) -> tuple[dt.datetime | None, dt.datetime | None]:
    start = where.since_at or (now - dt.timedelta(seconds=where.since_seconds)
                               if where.since_seconds is not None else None)
    end = where.until_at or (now - dt.timedelta(seconds=where.until_seconds)
                             if where.until_seconds is not None else None)
    return start, end


def unrolled_ranges(start: dt.datetime | None, end: dt.datetime | None,
                    hours: list[dt.datetime]) -> list[tuple[str, str]]:
    """``[start, end)`` less the rolled ``hours`` (sorted, each wholly within it), as ranges
    of timestamps (``-infinity`` and ``infinity`` for an open end)."""
    out: list[tuple[str, str]] = []
    at = start
    for h in hours:
        if at is None or at < h:
            out.append((at.isoformat() if at else "-infinity", h.isoformat()))
        at = h + _HOUR
    if at is None or end is None or at < end:
        out.append((at.isoformat() if at else "-infinity", end.isoformat() if end else "infinity"))
    return out


def _before_parts(ranges: list[tuple[str, str]], start: dt.datetime, parts_from: dt.datetime,
                  hour_end: dt.datetime) -> list[tuple[str, str]]:
    """The window's first range (from its start to the first rolled hour or further) less the
    rest of its first hour, which its ten-minute parts from ``parts_from`` on stand for."""
    (lo, hi), rest = ranges[0], ranges[1:]
    assert lo == start.isoformat()
    first = [(lo, parts_from.isoformat())] if parts_from > start else []
    if hi == "infinity" or dt.datetime.fromisoformat(hi) > hour_end:
        first.append((hour_end.isoformat(), hi))
    return first + rest


def window_stats(conn, where: JobFilter, *, tenants: int
                 ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Counts, run times and failure rates per intent and (intent_key None) over all of them,
    and the ``tenants`` tenants whose jobs waited longest from due to start (p95), with their
    counts. Run time is the last attempt's, start to finish; wait is from due to that start."""
    now = conn.execute(_FOR_STATISTICS).one()[2]
    start, end = _window(where, now)
    params = where.params()
    # The rollup is over all academies, intents, queues and states: a narrower window is read
    # from its jobs (an academy's on the retention index, its own rows only).
    narrowed = where.tenant_id or where.intent or where.queue or where.statuses
    first = _floor_hour(start) if start and _floor_hour(start) != start else None
    cover = rollup.Cover([], [], [], []) if narrowed else rollup.cover(
        conn, _ceil_hour(start) if start else None, _floor_hour(end) if end else None, first)
    hours = cover.hours
    ranges = unrolled_ranges(start, end, hours)
    part = 0
    if cover.parts and start and (end is None or end >= cover.parts + _HOUR):
        # The partial first hour: its parts from the first that starts in the window on, and
        # from the jobs only the minutes before it.
        part = -(-(start - cover.parts) // rollup.PART)
        ranges = _before_parts(ranges, start, cover.parts + part * rollup.PART,
                               cover.parts + _HOUR)
    intents: dict[str, dict[str, Any]] = {}

    def intent(key: str) -> dict[str, Any]:
        if key not in intents:
            intents[key] = _stats_row(key)
        return intents[key]

    rolled = rollup.blocks_and_hours(cover.singles)
    top = []
    for (g, key, tid, name, status, run_b, wait_b, n, retries, run_max, pending, p50,
         p95) in conn.execute(STATS, {**params, "los": [lo for lo, _ in ranges],
                                      "his": [hi for _, hi in ranges], "tenants": tenants,
                                      "prefix": cover.prefix, "suffix": cover.suffix,
                                      "blocks": rolled[0], "hours": rolled[1],
                                      "parts": cover.parts, "part": part}):
        if g is None:
            top.append({"tenant_id": tid, "name": name, "total": n, "pending": pending,
                        "wait_p50": p50, "wait_p95": p95})
            continue
        row = intent(key)
        if g == _BY_INTENT:
            _count(row, status, n, retries, run_max)
            if run_b is not None:
                row["_run"][run_b] = row["_run"].get(run_b, 0) + n
        elif g == _BY_INTENT_WAIT and wait_b is not None:
            row["_wait"][wait_b] = row["_wait"].get(wait_b, 0) + n
    if hours or cover.parts:
        spans = {"prefix": cover.prefix, "suffix": cover.suffix, "parts": cover.parts,
                 "part": part}
        for r in conn.execute(ROLLED_INTENTS, {**spans, "hours": cover.singles}):
            row = intent(r.intent_key)
            _count(row, r.status, r.n, r.retries, r.run_max)
            _add(row["_run"], r.run_b, r.run_n)
            _add(row["_wait"], r.wait_b, r.wait_n)
    overall = _stats_row(None)
    for row in intents.values():
        for name in ("total", "retries", *_STATES.values()):
            overall[name] += row[name]
        if row["run_max"] is not None:
            overall["run_max"] = max(overall["run_max"] or 0.0, row["run_max"])
        overall["_run"] = sketch.merge(overall["_run"], row["_run"])
        overall["_wait"] = sketch.merge(overall["_wait"], row["_wait"])
    rows = [*(_finish(intents[k]) for k in sorted(intents)), _finish(overall)]
    top.sort(key=lambda t: (t["wait_p95"] is None, -(t["wait_p95"] or 0), -t["total"],
                            t["tenant_id"] or ""))  # as the database chose them
    return rows, top
