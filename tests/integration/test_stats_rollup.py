"""`jobq stats` on hours rolled up by beat: the same figures as the jobs themselves, kept after
retention deletes the jobs, and exact again at once when a rolled hour changes."""

from __future__ import annotations

import datetime as dt
import time
from types import SimpleNamespace

import pytest

from app.beat import rollup as caretaker
from app.core import sketch
from app.store import db, reads, rollup, window_stats
from tests.fixtures import make_tenant, sql

pytestmark = pytest.mark.xdist_group("stats-rollup")

DAY = reads.JobFilter(since_seconds=86400.0)


def finished(tenant: str, *, hours_ago: float, n: int, status: str = "completed",
             intent: str = "system.exec.echo", run_ms: int = 100, retries: int = 0) -> None:
    """``n`` jobs of ``tenant`` that finished ``hours_ago``, each ``run_ms`` longer than the
    last, having waited 2 s from due to start."""
    sql("INSERT INTO job_executions (tenant_id, intent_key, status, retry_count, queue, "
        "created_at, executed_at, completed_at) "
        "SELECT CAST(:t AS uuid), :k, :s, :r, 'realtime', at - interval '2 seconds', at, "
        "       at + i * make_interval(secs => :ms / 1000.0) "
        "  FROM generate_series(1, :n) i, "
        "       (SELECT now() - make_interval(secs => :h * 3600) AS at) a",
        t=tenant, k=intent, s=status, r=retries, n=n, h=hours_ago, ms=run_ms)


def stats(tenant: str | None = None, **filters):
    with db.engine().connect() as conn:
        rows, tenants = window_stats.window_stats(
            conn, reads.JobFilter(tenant_id=tenant, since_seconds=86400.0, **filters),
            tenants=1000)
    return {r["intent_key"]: r for r in rows}, {t["tenant_id"]: t for t in tenants}


def roll_everything() -> caretaker.RollupReport:
    """Beat's caretaker, once the claim is a second old (what it waits for)."""
    with db.engine().begin() as conn:
        rollup.claim(conn)
    time.sleep(1.2)
    # Other tests in this database may have left months of history (thousands of hours): beat
    # runs the caretaker again a minute later; here, again at once until it says it is done.
    hours = jobs = 0
    for _ in range(10):
        report = caretaker.roll_up(budget=60.0)
        hours, jobs = hours + report.hours, jobs + report.jobs
        if report.done:
            break
    return caretaker.RollupReport(hours, jobs, done=report.done)


def rolled(hours_ago: float) -> tuple[bool, int] | None:
    rows = sql("SELECT rolled, changes FROM job_stats_hours "
               "WHERE hour = date_trunc('hour', now() - make_interval(secs => :h * 3600), 'UTC')",
               h=hours_ago)
    return tuple(rows[0]) if rows else None


def test_rolled_hours_give_the_figures_the_jobs_give_and_outlive_retention():
    one, two = make_tenant("롤업 학원 1"), make_tenant("롤업 학원 2")
    finished(one, hours_ago=3, n=10)
    finished(one, hours_ago=5, n=2, status="failed", retries=2)
    finished(two, hours_ago=4, n=5, intent="system.exec.sleep", run_ms=400)
    # A minute ago: its hour is never five minutes past its end yet, so never rolled. (12
    # minutes ago, as before, was the last hour's from HH:05 to HH:12, rolled by then.)
    finished(two, hours_ago=1 / 60, n=3)
    sql("INSERT INTO job_executions (tenant_id, intent_key) VALUES (CAST(:t AS uuid), "
        "'system.exec.echo')", t=two)                       # waiting
    before = stats(), stats(one), stats(two)

    report = roll_everything()
    assert report.done and report.hours >= 3
    assert rolled(3) == (True, 0) and rolled(4) == (True, 0) and rolled(5) == (True, 0)
    assert rolled(1 / 60) is None
    assert (stats(), stats(one), stats(two)) == before
    intents, tenants = stats(one)
    echo = intents["system.exec.echo"]
    assert (echo["total"], echo["completed"], echo["failed"], echo["retries"]) == (12, 10, 2, 4)
    assert echo["run_p95"] == pytest.approx(0.955, rel=sketch.RELATIVE_ERROR)
    _, tenants = stats()
    assert tenants[one]["total"] == 12
    assert tenants[one]["wait_p50"] == pytest.approx(2.0, rel=sketch.RELATIVE_ERROR)
    assert (tenants[two]["total"], tenants[two]["pending"]) == (9, 1)

    # Retention deletes the jobs: the overall figures of rolled hours still count them.
    sql("DELETE FROM job_executions WHERE tenant_id IN (CAST(:a AS uuid), CAST(:b AS uuid)) "
        "AND status <> 'pending'", a=one, b=two)
    intents, tenants = stats()
    gone = before[0][0][None]
    assert (intents[None]["completed"], intents[None]["failed"]) == (
        gone["completed"] - 3, gone["failed"])              # only this hour's three are gone
    assert tenants[one]["total"] == 12 and tenants[two]["total"] == 5 + 1


def test_a_change_to_a_rolled_hour_shows_at_once_and_is_rolled_again():
    tenant = make_tenant("늦은 기록 학원")
    finished(tenant, hours_ago=6, n=4)
    roll_everything()
    assert rolled(6) == (True, 0)
    before, _ = stats()
    # A completed job requeued by an operator, another's failure recorded late.
    [(job,)] = sql("SELECT id::text FROM job_executions WHERE tenant_id = CAST(:t AS uuid) "
                   "ORDER BY completed_at LIMIT 1", t=tenant)
    sql("UPDATE job_executions SET status = 'pending', completed_at = NULL, executed_at = NULL "
        "WHERE id = CAST(:j AS uuid)", j=job)
    finished(tenant, hours_ago=6, n=1, status="failed")
    assert rolled(6) == (True, 2)
    now = stats()
    overall = now[0][None]
    assert (overall["completed"], overall["failed"], overall["pending"]) == (
        before[None]["completed"] - 1, before[None]["failed"] + 1, before[None]["pending"] + 1)
    assert now[1][tenant]["total"] == 5
    roll_everything()
    assert rolled(6) == (True, 0)
    assert stats() == now


def test_a_job_finishing_now_counts_no_change_and_a_deleted_academy_leaves_the_rollup():
    tenant = make_tenant("사라질 학원")
    finished(tenant, hours_ago=7, n=2)
    roll_everything()
    changes = sql("SELECT coalesce(sum(changes), 0) FROM job_stats_hours")[0][0]
    finished(tenant, hours_ago=0.0, n=5)         # the usual completion: no trigger call
    assert sql("SELECT coalesce(sum(changes), 0) FROM job_stats_hours")[0][0] == changes
    assert sql("SELECT count(*) FROM job_stats_hourly WHERE tenant_id = CAST(:t AS uuid) "
               "AND level = 2", t=tenant)[0][0] == 1   # its row of the hour, per academy
    sql("DELETE FROM job_executions WHERE tenant_id = CAST(:t AS uuid)", t=tenant)
    sql("DELETE FROM tenants WHERE id = CAST(:t AS uuid)", t=tenant)
    assert sql("SELECT count(*) FROM job_stats_hourly WHERE tenant_id = CAST(:t AS uuid)",
               t=tenant)[0][0] == 0


def test_an_academys_four_hour_block_stands_for_its_hours_while_they_are_unchanged():
    tenant = make_tenant("네 시간 학원")
    [(block,)] = sql("SELECT date_trunc('day', now() - interval '1 day', 'UTC') "
                     "+ interval '8 hours'")                        # 08:00-12:00 yesterday
    for k in range(4):
        hours_ago = (dt.datetime.now(dt.UTC) - block).total_seconds() / 3600 - k - 0.5
        finished(tenant, hours_ago=hours_ago, n=k + 1)
    roll_everything()
    blocks = sql("SELECT n FROM job_stats_hourly WHERE level = 3 AND tenant_id = CAST(:t AS uuid)",
                 t=tenant)
    assert blocks == [(10,)]                                        # 1 + 2 + 3 + 4
    since = (dt.datetime.now(dt.UTC) - block).total_seconds() + 1800  # the block, and more
    with db.engine().connect() as conn:
        _, tenants = window_stats.window_stats(conn, reads.JobFilter(since_seconds=since),
                                               tenants=1000)
    assert {t["tenant_id"]: t["total"] for t in tenants}[tenant] == 10
    # A late finish in the block's third hour: read at once (the block is not used meanwhile),
    # and the block is made again with it.
    finished(tenant, hours_ago=(dt.datetime.now(dt.UTC) - block).total_seconds() / 3600 - 2.5,
             n=1, status="failed")
    with db.engine().connect() as conn:
        _, tenants = window_stats.window_stats(conn, reads.JobFilter(since_seconds=since),
                                               tenants=1000)
    assert {t["tenant_id"]: t["total"] for t in tenants}[tenant] == 11
    roll_everything()
    assert sql("SELECT n FROM job_stats_hourly WHERE level = 3 AND tenant_id = CAST(:t AS uuid)",
               t=tenant) == [(11,)]
    hour = dt.timedelta(hours=1)
    assert rollup.blocks_and_hours([block + k * hour for k in range(-1, 5)]) == (
        [block], [block - hour, block + 4 * hour])


def test_the_unrolled_ranges_are_the_window_less_its_rolled_hours():
    h = dt.datetime(2026, 12, 7, 0, tzinfo=dt.UTC)
    hour = dt.timedelta(hours=1)
    start, end = h - dt.timedelta(minutes=20), h + 4 * hour
    assert window_stats.unrolled_ranges(start, end, []) == [(start.isoformat(), end.isoformat())]
    assert window_stats.unrolled_ranges(start, end, [h, h + hour, h + 3 * hour]) == [
        (start.isoformat(), h.isoformat()),
        ((h + 2 * hour).isoformat(), (h + 3 * hour).isoformat())]
    assert window_stats.unrolled_ranges(None, None, [h]) == [
        ("-infinity", h.isoformat()), ((h + hour).isoformat(), "infinity")]


# --- a day's spans (0023) ------------------------------------------------------------------------

def finished_at(tenant: str, at: dt.datetime, *, n: int, status: str = "completed",
                intent: str = "system.exec.echo", run_ms: int = 100, wait_s: float = 2.0,
                retries: int = 0) -> None:
    """``n`` jobs of ``tenant`` started at ``at`` (having waited ``wait_s`` plus a second more
    for each one before), each ``run_ms`` longer than the last."""
    sql("INSERT INTO job_executions (tenant_id, intent_key, status, retry_count, queue, "
        "created_at, executed_at, completed_at) "
        "SELECT CAST(:t AS uuid), :k, :s, :r, 'realtime', "
        "       CAST(:at AS timestamptz) - make_interval(secs => :w + i), CAST(:at AS timestamptz), "
        "       CAST(:at AS timestamptz) + i * make_interval(secs => :ms / 1000.0) "
        "  FROM generate_series(1, :n) i",
        t=tenant, k=intent, s=status, r=retries, n=n, at=at, ms=run_ms, w=wait_s)


def window(since: dt.datetime, until: dt.datetime, tenants: int = 1000):
    with db.engine().connect() as conn:
        rows, top = window_stats.window_stats(
            conn, reads.JobFilter(since_at=since, until_at=until), tenants=tenants)
        cover = rollup.cover(conn, window_stats._ceil_hour(since), window_stats._floor_hour(until),
                             window_stats._floor_hour(since))
    return ({r["intent_key"]: r for r in rows}, {t["tenant_id"]: t for t in top}), cover


def two_days_ago() -> dt.datetime:
    return (dt.datetime.now(dt.UTC) - dt.timedelta(days=2)).replace(hour=0, minute=0, second=0,
                                                                     microsecond=0)


def test_a_window_across_midnight_reads_a_span_a_day_with_the_figures_of_its_jobs():
    one, two = make_tenant("자정 학원 1"), make_tenant("자정 학원 2")
    d1 = two_days_ago()
    d2, h = d1 + dt.timedelta(days=1), dt.timedelta(hours=1)
    since, until = d1 + 10 * h + dt.timedelta(minutes=37), d2 + 5 * h + dt.timedelta(minutes=20)
    # Before the window, in its partial first hour (both sides of its start, the minutes before
    # its next ten-minute part and that part), in the rolled hours of both days, in its partial
    # last hour and after it.
    finished_at(one, d1 + 9 * h + dt.timedelta(minutes=30), n=3, wait_s=500)
    finished_at(one, d1 + 10 * h + dt.timedelta(minutes=20), n=2, wait_s=400)
    finished_at(two, d1 + 10 * h + dt.timedelta(minutes=35), n=2, wait_s=600)
    finished_at(two, d1 + 10 * h + dt.timedelta(minutes=38), n=1, wait_s=5, run_ms=900)
    finished_at(one, d1 + 10 * h + dt.timedelta(minutes=50), n=2, run_ms=300)
    finished_at(one, d1 + 13 * h + dt.timedelta(minutes=30), n=6, wait_s=0.5)
    finished_at(two, d1 + 13 * h + dt.timedelta(minutes=35), n=2, status="failed", retries=1,
                intent="system.exec.sleep")
    finished_at(two, d1 + 23 * h + dt.timedelta(minutes=30), n=4, run_ms=700, wait_s=30)
    finished_at(one, d2 + dt.timedelta(minutes=30), n=5, wait_s=8)
    finished_at(two, d2 + 4 * h + dt.timedelta(minutes=30), n=3, status="failed",
                intent="system.exec.sleep", wait_s=90)
    finished_at(one, d2 + 5 * h + dt.timedelta(minutes=10), n=1, wait_s=1)
    finished_at(two, d2 + 6 * h + dt.timedelta(minutes=30), n=7, wait_s=3000)
    finished_at(one, d2 + 20 * h, n=2, wait_s=4000)
    before, _ = window(since, until)                        # what the jobs themselves say

    roll_everything()
    after, cover = window(since, until)
    # Each day's rolled hours of the window are one row a key: from 11:00 to the first day's
    # end, and from the second day's start up to its 04:00 hour (05:00 on is not whole); the
    # first hour from 10:40 in ten-minute parts.
    assert (cover.suffix, cover.prefix, cover.singles) == ([d1 + 11 * h], [d2 + 4 * h], [])
    assert cover.parts == d1 + 10 * h
    assert after == before
    intents, tenants = after
    assert (tenants[one]["total"], tenants[two]["total"]) == (2 + 6 + 5 + 1, 1 + 2 + 4 + 3)
    assert intents["system.exec.sleep"]["failed"] == 5
    assert intents["system.exec.echo"]["run_max"] == pytest.approx(4 * 0.7)
    assert tenants[two]["wait_p95"] == pytest.approx(90 + 3, rel=sketch.RELATIVE_ERROR)

    # A late finish in the first day's 13:00 hour: read from its jobs at once, the first day's
    # span left aside (its hours one by one) until the hour is rolled again.
    finished_at(one, d1 + 13 * h + dt.timedelta(minutes=45), n=1, status="failed", wait_s=700)
    late, cover = window(since, until)
    assert cover.suffix == [] and cover.prefix == [d2 + 4 * h]
    assert d1 + 13 * h not in cover.hours and d1 + 14 * h in cover.singles
    assert late[1][one]["total"] == tenants[one]["total"] + 1
    assert late[0][None]["failed"] == intents[None]["failed"] + 1
    roll_everything()
    again, cover = window(since, until)
    assert cover.suffix == [d1 + 11 * h] and again == late


def test_a_span_stands_only_for_hours_rolled_before_it_and_unchanged():
    day, h = dt.datetime(2026, 12, 5, tzinfo=dt.UTC), dt.timedelta(hours=1)
    made = dt.datetime(2026, 12, 6, 1, tzinfo=dt.UTC)

    def hour(k: int, *, rolled_at=made - h, changed=False, usable=True, prefix_at=made,
             suffix_at=made):
        return SimpleNamespace(hour=day + k * h, usable=usable and not changed, changed=changed,
                               rolled_at=rolled_at, prefix_at=prefix_at, suffix_at=suffix_at)

    every = [hour(k) for k in range(24)]
    nextday = [SimpleNamespace(**{**vars(hour(k)), "hour": day + (24 + k) * h}) for k in range(3)]
    got = rollup.plan(every[9:] + nextday, day + 9 * h, day + 27 * h)
    assert (got.suffix, got.prefix, got.singles) == ([day + 9 * h], [day + 26 * h], [])
    assert len(got.hours) == 15 + 3
    # Within one day: its hours one by one (the four-hour blocks are made of them).
    got = rollup.plan(every[9:17], day + 9 * h, day + 17 * h)
    assert (got.suffix, got.prefix, got.singles) == ([], [], [day + k * h for k in range(9, 17)])
    # An hour rolled after the span was made, or changed since its roll: not the span.
    late = [*every[:12], hour(12, rolled_at=made + h), *every[13:]]
    assert rollup.plan(late[9:], day + 9 * h, None).suffix == []
    changed = [*every[:12], hour(12, changed=True), *every[13:]]
    got = rollup.plan(changed[9:], day + 9 * h, None)
    assert got.suffix == [] and day + 12 * h not in got.hours + got.singles
    assert got.singles == [day + k * h for k in range(9, 24) if k != 12]
    # An hour not rolled yet is read from the jobs: the span from the day's start stops before.
    unrolled = [*every[:20], hour(20, usable=False, rolled_at=None)]
    got = rollup.plan(unrolled, day, None)
    assert got.prefix == [day + 19 * h] and len(got.hours) == 20
    # No span made (a day rolled before 0023): its hours one by one.
    assert rollup.plan([hour(k, prefix_at=None) for k in range(5)], day, None).prefix == []


def test_the_database_reads_a_percentile_from_buckets_as_python_does():
    tenant = make_tenant("백분위 학원")
    at = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=30)
    waits = [0.00005, 0.0003, 0.02, 0.02, 0.5, 1.7, 1.7, 1.7, 30.0, 61.0, 3599.0]
    for w in waits:
        finished_at(tenant, at, n=1, wait_s=w - 1)          # (the first job waits one more)
    with db.engine().connect() as conn:
        _, top = window_stats.window_stats(conn, reads.JobFilter(since_seconds=3600.0),
                                           tenants=1000)
    [mine] = [t for t in top if t["tenant_id"] == tenant]
    histogram: dict[int, int] = {}
    for w in waits:
        histogram[sketch.bucket(w)] = histogram.get(sketch.bucket(w), 0) + 1
    assert (mine["wait_p50"], mine["wait_p95"]) == (sketch.percentile(histogram, 0.5),
                                                    sketch.percentile(histogram, 0.95))


def test_hours_rolled_before_their_parts_were_kept_get_them_from_the_caretaker():
    tenant = make_tenant("부분 학원")
    h = dt.timedelta(hours=1)
    hour = (dt.datetime.now(dt.UTC) - 20 * h).replace(minute=0, second=0, microsecond=0)
    finished_at(tenant, hour + dt.timedelta(minutes=25), n=3)
    finished_at(tenant, hour + dt.timedelta(minutes=45), n=2, wait_s=9)
    day = (dt.datetime.now(dt.UTC) - 36 * h).replace(hour=0, minute=0, second=0, microsecond=0)
    finished_at(tenant, day + h, n=1)             # a day before the last, every hour rolled
    roll_everything()
    # As an upgrade to 0023 finds the hours rolled before it: no parts, no spans.
    sql("DELETE FROM job_stats_hourly WHERE level BETWEEN 4 AND 9")
    sql("UPDATE job_stats_hours SET parts_at = NULL, prefix_at = NULL, suffix_at = NULL")
    since, until = hour + dt.timedelta(minutes=30), hour + 3 * h
    before, cover = window(since, until)
    assert cover.parts is None and before[1][tenant]["total"] == 2
    whole = (day, day + 24 * h)
    everything, cover = window(*whole)
    assert (cover.prefix, cover.suffix) == ([], [])
    roll_everything()
    after, cover = window(since, until)
    assert cover.parts == hour and after == before
    again, cover = window(*whole)
    assert (cover.prefix, cover.singles) == ([day + 23 * h], []) and again == everything
    assert sql("SELECT count(*) FROM job_stats_hours WHERE rolled AND prefix_at IS NULL "
               "AND hour >= date_trunc('day', now(), 'UTC') - interval '8 days'") == [(0,)]
