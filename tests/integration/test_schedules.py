"""Schedules without beat: cron slots on a controlled clock, firing exactly once, refusals that
leave the other schedules alone, the default schedules, and the `jobq schedules` commands.

Real PostgreSQL; jobs that fire are published to this run's Redis prefix (no worker runs
them here). The real beat processes are in test_beat.py.
"""

from __future__ import annotations

import datetime as dt
import threading
import uuid

import pytest
from typer.testing import CliRunner

from app.beat import schedules
from app.core import cron
from app.core.registry import manifest
from app.ops.cli import app as cli
from app.store import schedules as schedule_store
from tests.fixtures import make_tenant, sql

UTC = dt.UTC
SEOUL = cron.zone("Asia/Seoul")


def db_now() -> dt.datetime:
    return sql("SELECT now()")[0][0]


def add(name: str | None = None, *, cron: str = "* * * * *", tenant: str | None = None,
        intent: str = "system.exec.echo", params: dict | None = None,
        done_until: dt.datetime | None = None, timezone: str = "Asia/Seoul") -> tuple[str, str]:
    """A schedule of the test's own, its watermark at ``done_until``; ``(id, name)``."""
    from app.store import db

    name = name or f"test-{uuid.uuid4().hex[:8]}"
    with db.engine().begin() as conn:
        schedule_id = schedules.add_schedule(conn, name=name, intent_key=intent, cron=cron,
                                             tenant_id=tenant, intent_params=params,
                                             timezone=timezone)
    if done_until is not None:
        sql("UPDATE job_schedules SET slots_done_until = :t WHERE id = CAST(:id AS uuid)",
            t=done_until, id=schedule_id)
    return schedule_id, name


def runs(schedule_id: str) -> list[tuple[dt.datetime, str, int, str | None]]:
    return [tuple(r) for r in sql(
        "SELECT slot_at, status, jobs, error FROM job_schedule_runs "
        "WHERE schedule_id = CAST(:id AS uuid) ORDER BY slot_at", id=schedule_id)]


def jobs_of(schedule_id: str) -> list[dict]:
    rows = sql("SELECT tenant_id::text, intent_key, intent_params, run_at, idempotency_key, "
               "source, status FROM job_executions WHERE idempotency_key LIKE :k "
               "ORDER BY run_at, tenant_id", k=f"schedule:{schedule_id}:%")
    return [dict(r._mapping) for r in rows]


def fire(now: dt.datetime, name: str) -> list[schedules.SlotOutcome]:
    return [o for o in schedules.fire_due(now=now) if o.schedule == name]


def minute(at: dt.datetime) -> dt.datetime:
    return at.replace(second=0, microsecond=0)


# --- slot arithmetic ------------------------------------------------------------------------------










# --- firing ---------------------------------------------------------------------------------------


def test_due_slot_makes_one_job_per_tenant_keyed_by_schedule_and_slot(tenant):
    t0 = minute(db_now()) - dt.timedelta(minutes=10)
    schedule_id, name = add(tenant=tenant, params={"report": "주간"}, done_until=t0)

    outcome, = fire(t0 + dt.timedelta(minutes=1, seconds=5), name)

    slot = t0 + dt.timedelta(minutes=1)
    assert (outcome.status, outcome.slot_at, outcome.jobs) == ("fired", slot, 1)
    job, = jobs_of(schedule_id)
    assert job == {
        "tenant_id": tenant, "intent_key": "system.exec.echo", "intent_params": {"report": "주간"},
        "run_at": slot, "idempotency_key": cron.idempotency_key(schedule_id, slot),
        "source": "schedule", "status": "pending",
    }
    assert runs(schedule_id) == [(slot, "fired", 1, None)]


def test_slot_fires_once_however_often_it_is_asked(tenant):
    t0 = minute(db_now()) - dt.timedelta(minutes=10)
    schedule_id, name = add(tenant=tenant, done_until=t0)
    clock = t0 + dt.timedelta(minutes=1, seconds=30)

    assert [o.status for o in fire(clock, name)] == ["fired"]
    assert fire(clock, name) == []
    assert fire(clock + dt.timedelta(seconds=20), name) == []

    assert len(jobs_of(schedule_id)) == 1
    assert [r[1] for r in runs(schedule_id)] == ["fired"]


def test_missed_slots_fire_only_the_latest_and_record_the_rest_as_skipped(tenant):
    t0 = minute(db_now()) - dt.timedelta(minutes=10)
    schedule_id, name = add(tenant=tenant, done_until=t0)

    outcome, = fire(t0 + dt.timedelta(minutes=5, seconds=30), name)

    assert (outcome.status, outcome.skipped) == ("fired", 4)
    latest = t0 + dt.timedelta(minutes=5)
    assert runs(schedule_id) == [
        *[(t0 + dt.timedelta(minutes=m), "skipped", 0, None) for m in (1, 2, 3, 4)],
        (latest, "fired", 1, None),
    ]
    assert [j["run_at"] for j in jobs_of(schedule_id)] == [latest]


def test_schedule_for_all_tenants_fires_for_each_active_one_only():
    active = [make_tenant(), make_tenant()]
    suspended = make_tenant(status="suspended")
    t0 = minute(db_now()) - dt.timedelta(minutes=10)
    schedule_id, name = add(done_until=t0)
    expected = {r[0] for r in sql("SELECT id::text FROM tenants WHERE status = 'active'")}

    outcome, = fire(t0 + dt.timedelta(minutes=1), name)

    made = {j["tenant_id"] for j in jobs_of(schedule_id)}
    assert made == expected and outcome.jobs == len(expected)
    assert set(active) <= made and suspended not in made


def test_unknown_intent_is_refused_and_recorded_while_other_schedules_fire(tenant):
    t0 = minute(db_now()) - dt.timedelta(minutes=10)
    broken_id, broken = add(tenant=tenant, intent="billing.exec.monthly_setlement", done_until=t0)
    good_id, good = add(tenant=tenant, done_until=t0)

    outcomes = {o.schedule: o for o in schedules.fire_due(now=t0 + dt.timedelta(minutes=1))}

    refused = outcomes[broken]
    assert refused.status == "refused"
    assert "unknown intent key 'billing.exec.monthly_setlement'" in refused.error
    (_, status, jobs, error), = runs(broken_id)
    assert (status, jobs, error) == ("refused", 0, refused.error)
    assert jobs_of(broken_id) == []
    assert outcomes[good].status == "fired" and len(jobs_of(good_id)) == 1


def test_invalid_params_refuse_the_slot_without_failed_rows(tenant):
    t0 = minute(db_now()) - dt.timedelta(minutes=10)
    schedule_id, name = add(tenant=tenant, intent="system.exec.sleep",
                            params={"seconds": "soon"}, done_until=t0)

    outcome, = fire(t0 + dt.timedelta(minutes=1), name)

    assert outcome.status == "refused"
    assert "invalid intent_params for 'system.exec.sleep': seconds:" in outcome.error
    assert jobs_of(schedule_id) == []


def test_schedule_of_a_suspended_tenant_is_refused():
    suspended = make_tenant(status="suspended")
    t0 = minute(db_now()) - dt.timedelta(minutes=10)
    _, name = add(tenant=suspended, done_until=t0)

    outcome, = fire(t0 + dt.timedelta(minutes=1), name)

    assert outcome.status == "refused" and f"tenant {suspended} is suspended" in outcome.error


def test_broken_cron_in_the_table_does_not_stop_the_tick(tenant):
    t0 = minute(db_now()) - dt.timedelta(minutes=10)
    broken_id, broken = add(tenant=tenant, done_until=t0)
    sql("UPDATE job_schedules SET cron = 'not a cron' WHERE id = CAST(:id AS uuid)", id=broken_id)
    good_id, _ = add(tenant=tenant, done_until=t0)

    outcomes = schedules.fire_due(now=t0 + dt.timedelta(minutes=1))

    assert broken not in {o.schedule for o in outcomes}
    assert runs(broken_id) == []
    assert len(jobs_of(good_id)) == 1


def test_concurrent_ticks_fire_each_slot_once(tenant):
    t0 = minute(db_now()) - dt.timedelta(minutes=10)
    schedule_id, name = add(tenant=tenant, done_until=t0)
    clock = t0 + dt.timedelta(minutes=3, seconds=10)
    barrier = threading.Barrier(6)
    results: list[list[schedules.SlotOutcome]] = []

    def tick():
        barrier.wait()
        results.append(fire(clock, name))

    threads = [threading.Thread(target=tick) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)

    assert sorted(o.status for r in results for o in r) == ["fired"]
    assert [r[1] for r in runs(schedule_id)] == ["skipped", "skipped", "fired"]
    assert len(jobs_of(schedule_id)) == 1


def test_paused_schedule_fires_nothing_and_resume_does_not_fire_the_past(tenant):
    from app.store import db

    t0 = minute(db_now()) - dt.timedelta(minutes=10)
    schedule_id, name = add(tenant=tenant, done_until=t0)
    with db.engine().begin() as conn:
        assert schedule_store.pause(conn, name) == name
    assert fire(t0 + dt.timedelta(minutes=5), name) == []

    with db.engine().begin() as conn:
        assert schedule_store.resume(conn, name) == name
    resumed_at = db_now()
    assert fire(resumed_at, name) == []  # the slots that passed while paused stay unfired

    assert runs(schedule_id) == [] and jobs_of(schedule_id) == []
    (done_until,), = sql("SELECT slots_done_until FROM job_schedules WHERE id = CAST(:id AS uuid)",
                         id=schedule_id)
    assert cron.next_slot("* * * * *", "Asia/Seoul", done_until) \
        == minute(resumed_at) + dt.timedelta(minutes=1)


# --- the default schedules ------------------------------------------------------------------------


def test_default_schedules_exist_after_migration():
    rows = sql("SELECT name, intent_key, cron, timezone, tenant_id, enabled, description "
               "FROM job_schedules WHERE name = ANY(:names) ORDER BY name",
               names=[d.name for d in manifest.schedules])
    assert [tuple(r) for r in rows] == sorted(
        (d.name, d.intent_key, d.cron, d.timezone, None, True, d.description)
        for d in manifest.schedules
    )
    assert {r[1]: r[2] for r in rows} == {
        "billing.exec.monthly_settlement": "0 2 1 * *",
        "report.exec.weekly_attendance": "0 7 * * 1",
    }


# --- the command line -----------------------------------------------------------------------------

runner = CliRunner(env={"COLUMNS": "250"})  # one line stays one line


def jobq(*args: str):
    return runner.invoke(cli, list(args))


def test_cli_add_list_pause_resume_remove(tenant):
    name = f"cli-{uuid.uuid4().hex[:6]}"
    added = jobq("schedules", "add", name, "--cron", "0 9 * * 1-5", "--intent",
                 "system.exec.echo", "--tenant", tenant, "--params", '{"n": 1}',
                 "--description", "weekday morning")
    assert added.exit_code == 0, added.output
    assert f"schedule {name} added (next slot " in added.output and "KST" in added.output
    row = sql("SELECT cron, tenant_id::text, intent_params, enabled FROM job_schedules "
              "WHERE name = :n", n=name)
    assert [tuple(r) for r in row] == [("0 9 * * 1-5", tenant, {"n": 1}, True)]

    listed = jobq("schedules", "list")
    assert listed.exit_code == 0 and name in listed.output

    assert jobq("schedules", "pause", name).exit_code == 0
    assert sql("SELECT enabled FROM job_schedules WHERE name = :n", n=name) == [(False,)]
    assert jobq("schedules", "resume", name).exit_code == 0
    assert sql("SELECT enabled FROM job_schedules WHERE name = :n", n=name) == [(True,)]

    removed = jobq("schedules", "remove", name)
    assert removed.exit_code == 0 and f"schedule {name} removed" in removed.output
    assert sql("SELECT count(*) FROM job_schedules WHERE name = :n", n=name) == [(0,)]


@pytest.mark.parametrize("args, message", [
    (["--cron", "61 * * * *", "--intent", "system.exec.echo"], "invalid cron expression"),
    (["--cron", "* * * * *", "--intent", "system.exec.ecco"],
     "unknown intent key 'system.exec.ecco'"),
    (["--cron", "* * * * *", "--intent", "system.exec.sleep", "--params", '{"seconds": "x"}'],
     "invalid intent_params for 'system.exec.sleep'"),
    (["--cron", "* * * * *", "--intent", "system.exec.echo", "--params", "[1]"],
     "--params must be a JSON object"),
    (["--cron", "* * * * *", "--intent", "system.exec.echo", "--timezone", "Mars/Base"],
     "unknown timezone 'Mars/Base'"),
    (["--cron", "* * * * *", "--intent", "system.exec.echo", "--tenant", "academy-7"],
     "tenant 'academy-7' is not a UUID"),
    (["--cron", "* * * * *", "--intent", "system.exec.echo", "--tenant", str(uuid.UUID(int=7))],
     f"unknown tenant {uuid.UUID(int=7)}"),
])
def test_cli_add_with_bad_arguments_exits_2_with_one_line(args, message):
    name = f"bad-{uuid.uuid4().hex[:6]}"
    result = jobq("schedules", "add", name, *args)
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert len(result.output.strip().splitlines()) == 1
    assert sql("SELECT count(*) FROM job_schedules WHERE name = :n", n=name) == [(0,)]


def test_cli_add_of_an_existing_name_exits_1():
    name = f"dup-{uuid.uuid4().hex[:6]}"
    assert jobq("schedules", "add", name, "--cron", "* * * * *", "--intent",
                "system.exec.echo").exit_code == 0
    again = jobq("schedules", "add", name, "--cron", "0 * * * *", "--intent", "system.exec.echo")
    assert again.exit_code == 1 and "exists already" in again.output


@pytest.mark.parametrize("command", ["pause", "resume", "remove"])
def test_cli_unknown_schedule_exits_1(command):
    result = jobq("schedules", command, "no-such-schedule")
    assert result.exit_code == 1
    assert "no schedule named 'no-such-schedule'" in result.output


def test_cli_defaults_brings_back_a_removed_default():
    assert jobq("schedules", "remove", "weekly-attendance-report").exit_code == 0
    result = jobq("schedules", "defaults")
    assert result.exit_code == 0 and "created: weekly-attendance-report" in result.output
    assert sql("SELECT intent_key, cron FROM job_schedules WHERE name = 'weekly-attendance-report'") \
        == [("report.exec.weekly_attendance", "0 7 * * 1")]
    assert "all default schedules exist" in jobq("schedules", "defaults").output
