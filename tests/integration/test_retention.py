"""Retention: only finished jobs old enough go, with their events; failed ones are kept longer,
and each academy may keep each end state as long as it needs.

Real PostgreSQL. Ages are made by back-dating ``completed_at`` the way time would.
"""

from __future__ import annotations

import pytest

from app.beat import retention
from app.core.settings import load, settings
from app.intake.actions import set_tenant_retention
from app.store import db, jobstore, tenants
from app.tasks.maintenance import apply_retention
from tests.fixtures import make_tenant, sql


def job(tenant: str, status: str, finished_days_ago: float | None,
        parent: str | None = None) -> str:
    """A job in ``status``, finished that many days ago (None: not finished)."""
    return sql(
        "INSERT INTO job_executions (tenant_id, intent_key, status, completed_at, parent_id) "
        "VALUES (:t, 'system.exec.echo', :s, now() - make_interval(secs => :d * 86400.0), "
        "CAST(:p AS uuid)) RETURNING id::text",
        t=tenant, s=status, d=finished_days_ago, p=parent,
    )[0][0] if finished_days_ago is not None else sql(
        "INSERT INTO job_executions (tenant_id, intent_key, status, created_at, parent_id) "
        "VALUES (:t, 'system.exec.echo', :s, now() - interval '400 days', CAST(:p AS uuid)) "
        "RETURNING id::text",
        t=tenant, s=status, p=parent,
    )[0][0]


def existing(ids: list[str]) -> set[str]:
    return {r[0] for r in sql("SELECT id::text FROM job_executions WHERE id::text = ANY(:ids)",
                              ids=ids)}


def events(ids: list[str]) -> set[str]:
    return {r[0] for r in sql("SELECT DISTINCT job_id::text FROM job_events "
                              "WHERE job_id::text = ANY(:ids)", ids=ids)}


def test_default_ages_are_90_days_and_a_year_for_failed_jobs():
    defaults = load({})
    assert (defaults.retention_days, defaults.retention_failed_days) == (90, 365)
    assert (settings.retention_days, settings.retention_failed_days) == (90, 365)


def test_retention_deletes_only_finished_jobs_old_enough_with_their_events(tenant):
    old = [job(tenant, "completed", 91), job(tenant, "cancelled", 120),
           job(tenant, "failed", 366)]
    kept = [
        job(tenant, "completed", 89),       # young
        job(tenant, "failed", 200),         # failed: kept for a year
        job(tenant, "pending", None),       # created 400 days ago, never ran
        job(tenant, "processing", None),
    ]
    assert events(old) == set(old)  # every job has its created event

    report = apply_retention()

    assert existing(old + kept) == set(kept)
    assert events(old) == set()
    assert events(kept) == set(kept)
    assert report >= len(old)


def test_a_parent_stays_while_a_child_is_young_and_goes_with_its_children(tenant):
    parent = job(tenant, "completed", 100)
    old_child = job(tenant, "completed", 100, parent=parent)
    young_child = job(tenant, "failed", 100, parent=parent)  # failed: 365 days

    retention.delete_expired()

    assert existing([parent, old_child, young_child]) == {parent, young_child}

    sql("UPDATE job_executions SET completed_at = now() - interval '400 days' "
        "WHERE id = CAST(:id AS uuid)", id=young_child)
    retention.delete_expired()

    assert existing([parent, young_child]) == set()


def test_retention_works_through_a_backlog_in_batches(tenant):
    old = [job(tenant, "completed", 95) for _ in range(7)]

    report = retention.delete_expired(batch=2)

    assert existing(old) == set()
    assert report.jobs >= 7 and report.done


def test_retention_stops_at_its_time_budget_and_the_next_run_goes_on(tenant):
    old = [job(tenant, "completed", 95) for _ in range(5)]

    first = retention.delete_expired(batch=2, budget=0)

    assert not first.done and first.jobs == 2
    assert len(existing(old)) == 3
    retention.delete_expired(batch=2)
    assert existing(old) == set()


def test_old_schedule_runs_go_but_each_schedule_keeps_its_latest():
    schedule = sql("INSERT INTO job_schedules (name, intent_key, cron, enabled) "
                   "VALUES ('retention-test', 'system.exec.echo', '* * * * *', false) "
                   "RETURNING id::text")[0][0]
    sql("INSERT INTO job_schedule_runs (schedule_id, slot_at, status, at) "
        "SELECT CAST(:s AS uuid), now() - make_interval(days => d), 'fired', "
        "now() - make_interval(days => d) FROM unnest(ARRAY[200, 150, 100, 10]) AS d", s=schedule)
    lonely = sql("INSERT INTO job_schedules (name, intent_key, cron, enabled) "
                 "VALUES ('retention-yearly', 'system.exec.echo', '0 0 1 1 *', false) "
                 "RETURNING id::text")[0][0]
    sql("INSERT INTO job_schedule_runs (schedule_id, slot_at, status, at) "
        "VALUES (CAST(:s AS uuid), now() - interval '300 days', 'fired', "
        "now() - interval '300 days')", s=lonely)

    retention.delete_expired()

    left = sql("SELECT schedule_id::text, extract(day FROM now() - at)::int FROM job_schedule_runs "
               "WHERE schedule_id::text IN (:a, :b) ORDER BY 1, 2", a=schedule, b=lonely)
    assert sorted(tuple(r) for r in left) == sorted([(schedule, 10), (lonely, 300)])


def test_each_academy_keeps_each_end_state_as_long_as_its_rule_says(tenant):
    billing = make_tenant()  # keeps a year (billing disputes), failures two
    set_tenant_retention(billing, completed=365, failed=730, by="test")
    set_tenant_retention(tenant, failed=30, cancelled=7, by="test")  # completed: the default 90
    gone = [job(tenant, "completed", 91), job(tenant, "failed", 31), job(tenant, "cancelled", 8),
            job(billing, "completed", 366), job(billing, "cancelled", 91),
            job(billing, "failed", 731)]
    kept = [job(tenant, "completed", 89), job(tenant, "failed", 29), job(tenant, "cancelled", 6),
            job(billing, "completed", 364), job(billing, "failed", 400),
            job(billing, "cancelled", 89)]

    retention.delete_expired()

    assert existing(gone + kept) == set(kept)
    assert events(kept) == set(kept)


def test_a_job_is_never_deleted_before_its_rule_allows_not_even_by_an_hour(tenant):
    set_tenant_retention(tenant, completed=10, failed=20, by="test")
    hour = 1 / 24
    almost = [job(tenant, "completed", 10 - hour), job(tenant, "failed", 20 - hour),
              job(tenant, "cancelled", 90 - hour)]
    past = [job(tenant, "completed", 10 + hour), job(tenant, "failed", 20 + hour),
            job(tenant, "cancelled", 90 + hour)]
    child_of_kept = job(tenant, "completed", 15, parent=job(tenant, "completed", 15))

    retention.delete_expired()

    assert existing(almost + past) == set(almost)
    assert existing([child_of_kept]) == set()  # its parent is past 10 days too: both went


def test_a_rule_changed_back_to_the_default_applies_at_the_next_run(tenant):
    set_tenant_retention(tenant, completed=365, by="test")
    old = job(tenant, "completed", 120)
    retention.delete_expired()
    assert existing([old]) == {old}

    set_tenant_retention(tenant, completed=0, by="test")
    retention.delete_expired()
    assert existing([old]) == set()


def test_rules_are_checked_and_every_change_is_recorded_with_who_made_it(tenant):
    for bad in ({"completed": -1}, {"failed": 36_501}, {"cancelled": 1.5}, {"failed": True}):
        with pytest.raises(ValueError, match="days to keep"):
            set_tenant_retention(tenant, by="test", **bad)
    with pytest.raises(ValueError, match="nothing to change"):
        set_tenant_retention(tenant, by="test")
    with pytest.raises(LookupError):
        set_tenant_retention("00000000-0000-0000-0000-000000000000", failed=3, by="test")

    rules = set_tenant_retention(tenant, failed=180, by="api:billing-admin")
    assert rules.own == {"completed": None, "failed": 180, "cancelled": None}
    assert rules.kept == {"completed": 90, "failed": 180, "cancelled": 90}
    set_tenant_retention(tenant, failed=180, by="api:billing-admin")  # no change: no event

    with db.engine().connect() as conn:
        changes = [e for e in tenants.tenant_events(conn, tenant) if e["kind"] == "retention"]
    assert [(e["by"], e["detail"]["failed"], e["detail"]["was"]["failed"]) for e in changes] == [
        ("api:billing-admin", 180, None)]


def test_batches_walk_an_academy_s_rows_in_order_from_their_cursor_past_what_is_kept(tenant):
    # 400 failed jobs kept a year lie among the 300 completed ones past their 90 days; a
    # parent among them is held by its young child.
    sql("INSERT INTO job_executions (tenant_id, intent_key, status, completed_at) "
        "SELECT CAST(:t AS uuid), 'system.exec.echo', "
        "CASE WHEN i % 7 < 4 THEN 'failed' ELSE 'completed' END, "
        "now() - interval '100 days' + i * interval '1 minute' FROM generate_series(1, 700) i",
        t=tenant)
    order = [r[0] for r in sql(
        "SELECT id::text FROM job_executions WHERE tenant_id = CAST(:t AS uuid) "
        "AND status = 'completed' ORDER BY completed_at, id", t=tenant)]
    held = order[60]
    job(tenant, "completed", 1, parent=held)
    defaults = jobstore.default_retention_days()
    pair = jobstore.Expired(tenant, "completed", 90)
    with db.engine().begin() as conn:
        [first] = jobstore.delete_expired(conn, [pair], defaults=defaults, per_pair=50).values()
    assert (first.read, first.deleted) == (50, 50)
    assert existing(order) == set(order[50:])

    pair.after = first.cursor
    with db.engine().begin() as conn:
        [second] = jobstore.delete_expired(conn, [pair], defaults=defaults, per_pair=50).values()
    # The next 50 in index order, the held parent read and passed over.
    assert (second.read, second.deleted) == (50, 49)
    assert existing(order) == {held, *order[100:]}

    report = retention.delete_expired(batch=50)
    assert report.done
    left = sql("SELECT status, count(*) FROM job_executions WHERE tenant_id = CAST(:t AS uuid) "
               "AND completed_at < now() - interval '90 days' GROUP BY status", t=tenant)
    assert dict(left) == {"failed": 400, "completed": 1}
