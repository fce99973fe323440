"""Retention: only finished jobs old enough go, with their events; failed ones are kept longer.

Real PostgreSQL. Ages are made by back-dating ``completed_at`` the way time would.
"""

from __future__ import annotations

from app.beat import retention
from app.core.settings import load, settings
from app.tasks.maintenance import apply_retention
from tests.fixtures import sql


def job(tenant: str, status: str, finished_days_ago: float | None,
        parent: str | None = None) -> str:
    """A job in ``status``, finished that many days ago (None: not finished)."""
    return sql(
        "INSERT INTO job_executions (tenant_id, intent_key, status, completed_at, parent_id) "
        "VALUES (:t, 'system.exec.echo', :s, now() - make_interval(days => :d), "
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
