"""The statistics of a window (`jobq stats`): finished jobs by when they finished, jobs waiting
or running by when they were asked for, per intent and overall, and the academies whose jobs
waited longest.

Finished jobs come from two places: the hours beat has rolled up (:mod:`app.store.rollup`; a
rolled hour is a few rows per intent and academy however many jobs finished in it) and, for
the rest of the window (its partial first hour, the last hour or two, any hour not rolled
or changed since), the jobs themselves on the finished-at index. So the cost follows what the
window holds in rows of the rollup, not the jobs of the window nor the history before it.
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

_ROLLED = "FROM job_stats_hourly s WHERE s.level = :level AND s.hour = ANY(CAST(:hours AS timestamptz[]))"

#: The rolled hours' rows per intent and state (a few dozen an hour: added up here).
ROLLED_INTENTS = text(
    f"""
    SELECT s.intent_key, s.status, s.n, s.retries, s.run_max, s.run_b, s.run_n, s.wait_b,
           s.wait_n {_ROLLED}
    """
)

#: The rolled hours per academy, its four-hour blocks where whole and the other hours one by
#: one: how many jobs, then its waits' histogram, added up in the database.
_TENANT_ROWS = """FROM job_stats_hourly s WHERE
    (s.level = 3 AND s.hour = ANY(CAST(:blocks AS timestamptz[])))
    OR (s.level = 2 AND s.hour = ANY(CAST(:hours AS timestamptz[])))"""
ROLLED_TENANTS = text(
    f"SELECT s.tenant_id::text, CAST(sum(s.n) AS bigint) {_TENANT_ROWS} GROUP BY 1")
ROLLED_TENANT_WAITS = text(
    f"""
    SELECT s.tenant_id::text, u.b, CAST(sum(u.c) AS bigint)
      {_TENANT_ROWS.replace("WHERE", ", unnest(s.wait_b, s.wait_n) AS u(b, c) WHERE", 1)}
     GROUP BY 1, 2
    """
)

#: Tenants' names by id.
NAMES = text("SELECT id::text, name FROM tenants WHERE id = ANY(CAST(:ids AS uuid[]))")

#: Which grouping set a LIVE_STATS row belongs to (``grouping()`` of its five columns: a bit
#: set for each column the set leaves out, the first column the highest bit).
_BY_INTENT, _BY_INTENT_WAIT, _BY_TENANT = 0b01001, 0b01110, 0b10010
_STATES = {"pending": "pending", "processing": "processing", "completed": "completed",
           "failed": "failed", "cancelled": "cancelled", "awaiting_approval": "awaiting"}
_HOUR = dt.timedelta(hours=1)


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
    hours = [] if narrowed else rollup.usable_hours(
        conn, _ceil_hour(start) if start else None, _floor_hour(end) if end else None)
    ranges = unrolled_ranges(start, end, hours)
    intents: dict[str, dict[str, Any]] = {}
    by_tenant: dict[str, dict[str, Any]] = {}

    def tenant(tid: str) -> dict[str, Any]:
        if tid not in by_tenant:
            by_tenant[tid] = {"tenant_id": tid, "total": 0, "pending": 0, "_wait": {}}
        return by_tenant[tid]

    def intent(key: str) -> dict[str, Any]:
        if key not in intents:
            intents[key] = _stats_row(key)
        return intents[key]

    live = {**params, "los": [lo for lo, _ in ranges], "his": [hi for _, hi in ranges]}
    for r in conn.execute(LIVE_STATS, live).mappings():
        if r["g"] == _BY_TENANT:
            t = tenant(r["tenant_id"])
            t["total"] += r["n"]
            t["pending"] += r["n"] if r["status"] == "pending" else 0
            if r["wait_b"] is not None:
                t["_wait"][r["wait_b"]] = t["_wait"].get(r["wait_b"], 0) + r["n"]
            continue
        row = intent(r["intent_key"])
        if r["g"] == _BY_INTENT:
            _count(row, r["status"], r["n"], r["retries"], r["run_max"])
            if r["run_b"] is not None:
                row["_run"][r["run_b"]] = row["_run"].get(r["run_b"], 0) + r["n"]
        elif r["g"] == _BY_INTENT_WAIT and r["wait_b"] is not None:
            row["_wait"][r["wait_b"]] = row["_wait"].get(r["wait_b"], 0) + r["n"]
    if hours:
        for r in conn.execute(ROLLED_INTENTS, {"hours": hours, "level": rollup.BY_INTENT}):
            row = intent(r.intent_key)
            _count(row, r.status, r.n, r.retries, r.run_max)
            _add(row["_run"], r.run_b, r.run_n)
            _add(row["_wait"], r.wait_b, r.wait_n)
        blocks, singles = rollup.blocks_and_hours(hours)
        rolled = {"blocks": blocks, "hours": singles}
        for tid, n in conn.execute(ROLLED_TENANTS, rolled):
            tenant(tid)["total"] += n
        for tid, b, c in conn.execute(ROLLED_TENANT_WAITS, rolled):
            h = tenant(tid)["_wait"]
            h[b] = h.get(b, 0) + c
    overall = _stats_row(None)
    for row in intents.values():
        for name in ("total", "retries", *_STATES.values()):
            overall[name] += row[name]
        if row["run_max"] is not None:
            overall["run_max"] = max(overall["run_max"] or 0.0, row["run_max"])
        overall["_run"] = sketch.merge(overall["_run"], row["_run"])
        overall["_wait"] = sketch.merge(overall["_wait"], row["_wait"])
    rows = [*(_finish(intents[k]) for k in sorted(intents)), _finish(overall)]
    waits = []
    for t in by_tenant.values():
        h = t.pop("_wait")
        t.update(wait_p50=sketch.percentile(h, 0.5), wait_p95=sketch.percentile(h, 0.95))
        waits.append(t)
    waits.sort(key=lambda t: (t["wait_p95"] is None, -(t["wait_p95"] or 0), -t["total"]))
    top = waits[:tenants]
    names = dict(conn.execute(NAMES, {"ids": [t["tenant_id"] for t in top]}).all()) if top else {}
    return rows, [{"tenant_id": t["tenant_id"], "name": names.get(t["tenant_id"]),
                   "total": t["total"], "pending": t["pending"], "wait_p50": t["wait_p50"],
                   "wait_p95": t["wait_p95"]} for t in top]
