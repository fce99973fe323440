"""The sweep's look for lost and unrouted jobs costs what it finds, not what waits: behind a
backlog the feeder owns, it reads a few index entries, whatever the planner believes about the
table (no statistics here: autovacuum off, or a table that just grew).

Inline, the three reads ran once per due row of the backlog: 9 M rows read, 5.8 s a sweep behind
3,000 waiting jobs, every second, seen as the PostgreSQL CPU of a drain doubling once beat ran
beside it."""

from __future__ import annotations

import json

from sqlalchemy import text

from app.store import db
from app.store.jobstore.sweep import LOCK_DUE
from tests.fixtures import make_tenant, sql

BACKLOG = 2000


def _plan(statement, **params) -> dict:
    """The top node of ``statement``'s EXPLAIN ANALYZE (its writes rolled back)."""
    with db.engine().begin() as conn:
        [[plan]] = conn.execute(text("EXPLAIN (ANALYZE, FORMAT JSON) " + str(statement)),
                                params).all()
        conn.rollback()
    plan = plan if isinstance(plan, list) else json.loads(plan)
    return plan[0]["Plan"]


def _rows_read(plan: dict) -> float:
    """Rows every node of a plan produced, over all its loops."""
    here = plan.get("Actual Rows", 0) * plan.get("Actual Loops", 1)
    return here + sum(_rows_read(p) for p in plan.get("Plans", []))


def test_the_sweep_reads_what_it_finds_not_the_backlog_behind_it():
    tenant = make_tenant()
    sql("INSERT INTO job_executions (tenant_id, intent_key, intent_params, queue, published_at) "
        "SELECT CAST(:t AS uuid), 'system.exec.echo', '{}', 'realtime', "
        "CASE WHEN i % 10 = 0 THEN now() END FROM generate_series(1, :n) i",
        t=tenant, n=BACKLOG)
    try:
        read = _rows_read(_plan(LOCK_DUE, batch=100, republish_after=60, broker_since=None))
        # What it finds may include other tests' rows in this database (a deleted tenant's
        # pending jobs are refused by the sweep): linear in them, never in the backlog squared
        # (8 M rows here before).
        assert read < 50 * BACKLOG, f"the sweep read {read:,.0f} rows behind {BACKLOG} waiting jobs"
    finally:
        sql("DELETE FROM job_executions WHERE tenant_id = CAST(:t AS uuid)", t=tenant)


#: Finished jobs of each deleted academy.
HISTORY = 600


def _job_rows_read(plan: dict) -> float:
    """Rows of ``job_executions`` and its indexes every node read (kept or filtered out)."""
    on_jobs = plan.get("Relation Name") == "job_executions" or \
        str(plan.get("Index Name", "")).endswith("_job_executions") or \
        str(plan.get("Index Name", "")).startswith("ix_job_executions")
    here = (plan.get("Actual Rows", 0) + plan.get("Rows Removed by Filter", 0)) \
        * plan.get("Actual Loops", 1) if on_jobs else 0
    return here + sum(_job_rows_read(p) for p in plan.get("Plans", []))


def _sweep_reads() -> float:
    return _job_rows_read(_plan(LOCK_DUE, batch=100, republish_after=60, broker_since=None))


def test_a_deleted_academy_costs_the_sweep_a_probe_not_a_read_of_the_backlog():
    # Academies with a history and nothing pending (a deleted one's pending jobs were refused
    # when it was deleted), beside another academy's backlog.
    busy = make_tenant()
    gone = [make_tenant() for _ in range(5)]
    sql("INSERT INTO job_executions (tenant_id, intent_key, intent_params, queue) "
        "SELECT CAST(:t AS uuid), 'system.exec.echo', '{}', 'realtime' "
        "FROM generate_series(1, :n)", t=busy, n=BACKLOG)
    for t in gone:
        sql("INSERT INTO job_executions (tenant_id, intent_key, queue, status, completed_at) "
            "SELECT CAST(:t AS uuid), 'system.exec.echo', 'realtime', 'failed', now() "
            "FROM generate_series(1, :n)", t=t, n=HISTORY)
        sql("INSERT INTO fair_queue (queue, tenant_id, vtime, ready) "
            "VALUES ('realtime', CAST(:t AS uuid), 0, false) ON CONFLICT DO NOTHING", t=t)
    try:
        before = _sweep_reads()
        sql("UPDATE tenants SET status = 'deleted' WHERE id = ANY(CAST(:ids AS uuid[]))", ids=gone)
        after = _sweep_reads()
        # Other tests' deleted academies in this database are in both. Before, each deleted
        # academy cost a read of its whole history, or (the planner's choice on a big table)
        # of the whole backlog, every second.
        assert after - before < 100, (
            f"{len(gone)} deleted academies cost the sweep {after - before:,.0f} more rows read")
    finally:
        for t in (busy, *gone):
            sql("DELETE FROM job_executions WHERE tenant_id = CAST(:t AS uuid)", t=t)


#: Academies each with a few waiting jobs (the many-academies drain: 3,000 jobs, 1,000 academies).
ACADEMIES = 300


def test_waking_idle_academies_reads_what_came_due_not_the_backlog_of_every_academy():
    # A backlog spread over many academies, their fair-queue rows marked idle (as the feeder
    # leaves those it drained), and one job of one more academy that came due a moment ago.
    from app.store.jobstore.sweep import FLAG_DUE, FLAG_NEWLY_DUE

    many = [make_tenant() for _ in range(ACADEMIES)]
    late = make_tenant()
    sql("INSERT INTO job_executions (tenant_id, intent_key, intent_params, queue) "
        "SELECT t, 'system.exec.echo', '{}', 'realtime' "
        "FROM unnest(CAST(:ts AS uuid[])) t, generate_series(1, 3)", ts=many)
    sql("INSERT INTO job_executions (tenant_id, intent_key, intent_params, queue, run_at) "
        "VALUES (CAST(:t AS uuid), 'system.exec.echo', '{}', 'realtime', now())", t=late)
    sql("UPDATE fair_queue SET ready = false WHERE tenant_id = ANY(CAST(:ts AS uuid[]))",
        ts=[*many, late])
    try:
        reads = {"newly": _rows_read(_plan(FLAG_NEWLY_DUE, lookback=120)),
                 "all": _rows_read(_plan(FLAG_DUE))}
        # The look of every round: the one academy whose job came due (and whatever other
        # tests left waiting for a time), not the 900 waiting jobs of 300 academies.
        assert reads["newly"] < ACADEMIES, reads
        # The whole look (once a minute, and when a tenant is resumed) still reads them.
        assert reads["all"] > 3 * ACADEMIES, reads
        with db.engine().begin() as conn:
            from app.store import jobstore

            assert jobstore.flag_due(conn, newly=120).get("realtime", 0) >= 1
        assert sql("SELECT ready FROM fair_queue WHERE tenant_id = CAST(:t AS uuid)",
                   t=late) == [(True,)]
    finally:
        sql("DELETE FROM job_executions WHERE tenant_id = ANY(CAST(:ts AS uuid[]))",
            ts=[*many, late])
        sql("DELETE FROM fair_queue WHERE tenant_id = ANY(CAST(:ts AS uuid[]))", ts=[*many, late])
