"""`jobq stats` in one read: exact counts by intent, state and academy, and run times and waits
from log buckets the database computes as app.core.sketch does."""

from __future__ import annotations

import pytest
from sqlalchemy import text

from app.core import sketch
from app.store import db, reads, window_stats
from tests.fixtures import sql


def test_the_database_puts_a_duration_in_the_bucket_python_does():
    values = [0.0, 0.00005, 0.0001, 0.00123, 0.5, 1.0, 2.0, 59.9, 3600.0, 86400.0 * 3]
    with db.engine().connect() as conn:
        got = conn.execute(text(
            f"SELECT {sketch.SQL_BUCKET.format(seconds='v')} "
            "FROM unnest(CAST(:v AS float8[])) WITH ORDINALITY AS u(v, i) ORDER BY i"),
            {"v": values}).scalars().all()
        assert conn.execute(text(
            f"SELECT {sketch.SQL_BUCKET.format(seconds='NULL::float8')}")).scalar() is None
    assert got == [sketch.bucket(v) for v in values]


def test_window_stats_count_exactly_and_read_run_times_within_the_sketch_error(tenant):
    # Ten completed runs of 0.1 .. 1.0 s, two failed, one pending, one of another intent.
    sql("INSERT INTO job_executions (tenant_id, intent_key, status, retry_count, created_at, "
        "executed_at, completed_at) "
        "SELECT CAST(:t AS uuid), 'system.exec.echo', 'completed', 0, now() - interval '1 hour', "
        "now() - interval '1 hour' + interval '30 seconds', "
        "now() - interval '1 hour' + interval '30 seconds' + i * interval '100 ms' "
        "FROM generate_series(1, 10) i", t=tenant)
    sql("INSERT INTO job_executions (tenant_id, intent_key, status, retry_count, created_at, "
        "executed_at, completed_at) SELECT CAST(:t AS uuid), 'system.exec.echo', 'failed', 2, "
        "now() - interval '1 hour', now() - interval '59 minutes', now() - interval '58 minutes' "
        "FROM generate_series(1, 2)", t=tenant)
    sql("INSERT INTO job_executions (tenant_id, intent_key) VALUES "
        "(CAST(:t AS uuid), 'system.exec.echo'), (CAST(:t AS uuid), 'system.exec.sleep')",
        t=tenant)

    with db.engine().connect() as conn:
        rows, tenants = window_stats.window_stats(
            conn, reads.JobFilter(tenant_id=tenant, since_seconds=7200.0), tenants=10)
    by_key = {r["intent_key"]: r for r in rows}
    echo, overall = by_key["system.exec.echo"], by_key[None]
    assert (echo["total"], echo["completed"], echo["failed"], echo["pending"],
            echo["retries"]) == (13, 10, 2, 1, 4)
    assert overall["total"] == 14 and by_key["system.exec.sleep"]["pending"] == 1
    assert echo["run_max"] == pytest.approx(1.0)
    assert echo["run_p50"] == pytest.approx(0.55, rel=sketch.RELATIVE_ERROR)
    assert echo["run_p95"] == pytest.approx(0.955, rel=sketch.RELATIVE_ERROR)
    assert echo["wait_p50"] == pytest.approx(30, rel=sketch.RELATIVE_ERROR)  # the failed: 60 s
    [mine] = tenants
    assert (mine["tenant_id"], mine["total"], mine["pending"]) == (tenant, 14, 2)
    assert mine["wait_p95"] == pytest.approx(60, rel=sketch.RELATIVE_ERROR)


def test_an_empty_window_has_an_overall_row_of_zeros_and_no_tenants(tenant):
    with db.engine().connect() as conn:
        rows, tenants = window_stats.window_stats(conn, reads.JobFilter(tenant_id=tenant), tenants=10)
    assert tenants == []
    [overall] = rows
    assert overall["intent_key"] is None and overall["total"] == 0
    assert overall["run_p50"] is None and overall["wait_p95"] is None
