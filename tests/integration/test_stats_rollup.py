"""`jobq stats` on hours rolled up by beat: the same figures as the jobs themselves, kept after
retention deletes the jobs, and exact again at once when a rolled hour changes."""

from __future__ import annotations

import datetime as dt
import time

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
    finished(two, hours_ago=0.2, n=3)                       # this hour: never rolled yet
    sql("INSERT INTO job_executions (tenant_id, intent_key) VALUES (CAST(:t AS uuid), "
        "'system.exec.echo')", t=two)                       # waiting
    before = stats(), stats(one), stats(two)

    report = roll_everything()
    assert report.done and report.hours >= 3
    assert rolled(3) == (True, 0) and rolled(4) == (True, 0) and rolled(5) == (True, 0)
    assert rolled(0.2) is None
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
