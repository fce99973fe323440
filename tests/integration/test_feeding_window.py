"""A feeder's look counts its window from the broker's list and the last second of hand-offs:
under a held xmin horizon it does not walk the index entries of every job that went through the
window (ten minutes at 50 jobs/s: 12,368 buffers a look before 0021)."""

from __future__ import annotations

import uuid

from sqlalchemy import text

from app.store import db, jobstore
from tests.fixtures import make_tenant, sql

COUNT = text("SELECT pg_stat_get_xact_tuples_returned('ix_job_executions_in_flight'::regclass)")


def _look(queue: str, broker: int | None) -> tuple[int, int]:
    """The window a look saw, and how many entries of the in-flight index it read."""
    with db.engine().begin() as conn:
        before = conn.execute(COUNT).scalar_one()
        seen = jobstore.look(conn, queue, 0, broker)
        read = conn.execute(COUNT).scalar_one() - before
    return seen.in_flight, read


def test_under_a_held_horizon_a_look_reads_the_last_seconds_hand_offs_only():
    tenant, queue = make_tenant(), f"window-{uuid.uuid4().hex[:8]}"
    sql("INSERT INTO job_executions (tenant_id, intent_key, queue, published_at) "
        "SELECT CAST(:t AS uuid), 'system.exec.echo', :q, now() - interval '10 seconds' "
        "FROM generate_series(1, 300)", t=tenant, q=queue)
    assert _look(queue, None)[0] == 300          # no list length: every one stamped counts
    with db.engine().connect() as holder:
        holder.execute(text("SELECT txid_current()"))  # idle in a transaction with an XID
        sql("UPDATE job_executions SET status = 'processing' WHERE queue = :q", q=queue)
        sql("INSERT INTO job_executions (tenant_id, intent_key, queue, published_at) "
            "SELECT CAST(:t AS uuid), 'system.exec.echo', :q, now() FROM generate_series(1, 3)",
            t=tenant, q=queue)
        in_flight, read = _look(queue, 0)
        assert in_flight == 3                    # the list is empty: the last second's count
        assert read < 20, f"the look read {read} in-flight entries for 3 jobs in the window"
        assert _look(queue, 5)[0] == 5           # the list holds more: it counts
        holder.rollback()


def test_under_a_held_horizon_a_look_finds_a_ready_academy_without_walking_old_versions():
    tenant, queue = make_tenant(), f"ready-{uuid.uuid4().hex[:8]}"
    sql("INSERT INTO job_executions (tenant_id, intent_key, queue) "
        "VALUES (CAST(:t AS uuid), 'system.exec.echo', :q)", t=tenant, q=queue)  # ready
    ready = text("SELECT pg_stat_get_xact_tuples_returned('ix_fair_queue_ready'::regclass)")
    with db.engine().connect() as holder:
        holder.execute(text("SELECT txid_current()"))  # idle in a transaction with an XID
        for _ in range(300):                       # 300 looks' worth of the row's versions
            sql("UPDATE fair_queue SET vtime = vtime + 1 WHERE queue = :q", q=queue)
        with db.engine().begin() as conn:
            before = conn.execute(ready).scalar_one()
            waiting = jobstore.look(conn, queue, 0, 0).waiting   # (a window of 0: no pick)
            read = conn.execute(ready).scalar_one() - before
        holder.rollback()
    assert waiting and read < 5, f"found the ready academy after {read} index entries"
