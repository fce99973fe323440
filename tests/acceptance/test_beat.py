"""Beat as the cron's replacement, with real processes: one worker and two beat processes.

Plain-SQL rows start within about a second, ``run_at`` holds a job back exactly as long as it
says, a long healthy run keeps its lease, and a per-second schedule fired by two beats at once
makes one job per slot. conftest shortens the sweep, lease and recovery timings.
"""

from __future__ import annotations

import datetime as dt
import itertools
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from typer.testing import CliRunner

from app import submit
from app.ops.cli import app as cli
from app.store import db
from tests.fixtures import (
    BeatProcess,
    WorkerProcess,
    event_kinds,
    job_row,
    make_tenant,
    spawn_beat,
    spawn_worker,
    sql,
    wait_for,
    wait_for_status,
)

pytestmark = pytest.mark.slow

#: Schedules are read twice a second here (default 10 s), so per-second slots can be tested.
BEAT_ENV = {"JOBQ_SCHEDULE_INTERVAL": "0.5"}
EVERY_2_SECONDS = "* * * * * */2"  # croniter: the sixth field is seconds


@dataclass
class System:
    worker: WorkerProcess
    beats: list[BeatProcess]


@pytest.fixture(scope="module")
def system(tmp_path_factory) -> Iterator[System]:
    directory = tmp_path_factory.mktemp("beat")
    worker = spawn_worker(directory, "-P", "threads", "-c", "4", wait=False)
    beats = [spawn_beat(directory, env=BEAT_ENV, wait=False) for _ in range(2)]
    try:
        worker.wait_ready()
        for beat in beats:
            beat.wait_ready()
        yield System(worker, beats)
    finally:
        for beat in beats:
            beat.stop(timeout=20)
        worker.stop(timeout=20)


def insert_by_sql(tenant: str, intent: str = "system.exec.echo", params: str = "{}",
                  run_at_in: float | None = None) -> str:
    """The original callers' INSERT, optionally with a ``run_at`` that many seconds ahead."""
    if run_at_in is None:
        return sql("INSERT INTO job_executions (tenant_id, intent_key, intent_params) "
                   "VALUES (:t, :i, CAST(:p AS jsonb)) RETURNING id::text",
                   t=tenant, i=intent, p=params)[0][0]
    return sql("INSERT INTO job_executions (tenant_id, intent_key, intent_params, run_at) "
               "VALUES (:t, :i, CAST(:p AS jsonb), now() + make_interval(secs => :s)) "
               "RETURNING id::text", t=tenant, i=intent, p=params, s=run_at_in)[0][0]


# --- the sweep ------------------------------------------------------------------------------------


@pytest.mark.smoke
def test_row_inserted_by_plain_sql_completes_within_seconds(system, tenant):
    job_id = insert_by_sql(tenant, params='{"legacy": true}')

    row = wait_for_status(job_id, "completed", timeout=20)

    assert row["source"] == "sql" and row["result"] == {"legacy": True}
    assert row["published_at"] is not None
    # The sweep runs every 0.5 s here (1 s by default): seconds, not the old cron's minute.
    assert (row["executed_at"] - row["created_at"]).total_seconds() < 5
    assert event_kinds(job_id) == [(0, "created"), (1, "started"), (1, "completed")]


def test_plain_sql_row_with_future_run_at_waits_for_it_then_runs(system, tenant):
    job_id = insert_by_sql(tenant, run_at_in=3)
    run_at = job_row(job_id)["run_at"]

    row = wait_for_status(job_id, "completed", timeout=20)
    assert row["executed_at"] >= run_at
    assert (row["executed_at"] - run_at).total_seconds() < 5


def test_long_run_at_waits_in_the_table_not_in_the_broker(system, tenant):
    run_at = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=7)  # beyond JOBQ_ETA_MAX_SECONDS
    with db.session() as session:
        job_id = submit(session, tenant_id=tenant, intent_key="system.exec.echo", run_at=run_at)
        session.commit()

    # Nothing went to the broker at submit: no ETA message that Redis could redeliver.
    assert job_row(job_id)["published_at"] is None

    row = wait_for_status(job_id, "completed", timeout=25)
    assert row["executed_at"] >= run_at
    assert event_kinds(job_id) == [(0, "created"), (1, "started"), (1, "completed")]


def test_long_healthy_run_keeps_its_lease_and_is_never_recovered(system, tenant):
    # Runs for more than twice the 3 s lease while recovery checks every 0.5 s.
    job_id = insert_by_sql(tenant, "system.exec.sleep", '{"seconds": 7}')

    row = wait_for_status(job_id, "completed", timeout=30)

    assert row["retry_count"] == 0
    assert event_kinds(job_id) == [(0, "created"), (1, "started"), (1, "completed")]


def test_plain_sql_row_of_a_suspended_tenant_waits_unpublished_and_runs_once_resumed(system):
    from app.beat.sweep import sweep_once
    from app.store import tenants

    suspended = make_tenant(status="suspended")
    job_id = insert_by_sql(suspended)

    sweep_once()  # a sweep (beat's run too) neither publishes nor fails it
    row = job_row(job_id)
    assert (row["status"], row["published_at"]) == ("pending", None)
    assert event_kinds(job_id) == [(0, "created")]

    with db.engine().begin() as conn:
        tenants.set_tenant_status(conn, suspended, "active", by="test")
    row = wait_for_status(job_id, "completed", timeout=20)
    assert event_kinds(job_id) == [(0, "created"), (1, "started"), (1, "completed")]


def test_plain_sql_row_of_a_deleted_tenant_is_refused_by_the_sweep(system):
    deleted = make_tenant(status="deleted")
    job_id = insert_by_sql(deleted)

    row = wait_for_status(job_id, "failed", timeout=20)

    assert row["error_message"] == f"tenant {deleted} is deleted; its jobs are refused"
    assert row["executed_at"] is None
    assert event_kinds(job_id) == [(0, "created"), (0, "refused")]


def test_processing_row_without_a_lease_is_recovered_and_run(system, tenant):
    # What the original cron worker left behind when it died: processing, and nobody on it.
    job_id = sql("INSERT INTO job_executions (tenant_id, intent_key, status, executed_at) "
                 "VALUES (:t, 'system.exec.echo', 'processing', now() - interval '1 hour') "
                 "RETURNING id::text", t=tenant)[0][0]

    row = wait_for_status(job_id, "completed", timeout=20)

    assert row["retry_count"] == 1
    assert event_kinds(job_id) == [(0, "created"), (1, "lost"), (2, "started"), (2, "completed")]


# --- schedules ------------------------------------------------------------------------------------


def schedule_runs(name: str) -> list[tuple[dt.datetime, str, int]]:
    return [tuple(r) for r in sql(
        "SELECT r.slot_at, r.status, r.jobs FROM job_schedule_runs r "
        "JOIN job_schedules s ON s.id = r.schedule_id WHERE s.name = :n ORDER BY r.slot_at",
        n=name)]


def schedule_jobs(schedule_id: str) -> list[tuple[dt.datetime, str]]:
    return [tuple(r) for r in sql(
        "SELECT run_at, status FROM job_executions WHERE idempotency_key LIKE :k ORDER BY run_at",
        k=f"schedule:{schedule_id}:%")]


def jobq(*args: str):
    result = CliRunner(env={"COLUMNS": "250"}).invoke(cli, list(args))
    assert result.exit_code == 0, result.output
    return result


def test_two_beats_fire_each_slot_of_a_schedule_exactly_once(system, tenant):
    name = "every-2s-two-beats"
    jobq("schedules", "add", name, "--cron", EVERY_2_SECONDS, "--intent", "system.exec.echo",
         "--tenant", tenant, "--params", '{"from": "schedule"}')
    schedule_id = sql("SELECT id::text FROM job_schedules WHERE name = :n", n=name)[0][0]
    sent_before = [beat.sent("jobq.fire_schedules") for beat in system.beats]

    wait_for(lambda: len(schedule_runs(name)) >= 5, timeout=30, message="five slots")
    jobq("schedules", "pause", name)

    fired = schedule_runs(name)
    slots = [slot for slot, _, _ in fired]
    assert [(status, jobs) for _, status, jobs in fired] == [("fired", 1)] * len(fired)
    assert all(b - a == dt.timedelta(seconds=2) for a, b in itertools.pairwise(slots))
    wait_for(lambda: all(s == "completed" for _, s in schedule_jobs(schedule_id)),
             timeout=20, message="the schedule's jobs to complete")
    assert [run_at for run_at, _ in schedule_jobs(schedule_id)] == slots
    # One beat leads and sends the schedule tick; the other follows and sends nothing.
    leader, follower = leader_and_follower(system)
    assert leader.sent("jobq.fire_schedules") > sent_before[system.beats.index(leader)]
    assert follower.sent("jobq.fire_schedules") == 0


def leader_and_follower(system: System) -> tuple[BeatProcess, BeatProcess]:
    """The beat that says it leads, and the one that says it follows."""
    live = [b for b in system.beats if b.proc.poll() is None]

    def settled():
        leaders = [b for b in live if "this beat leads" in b.log()]
        return leaders if len(leaders) == 1 else None

    (leader,) = wait_for(settled, 20, message="one beat to lead")
    follower = next(b for b in live if b is not leader)
    assert "another beat leads" in follower.log()
    return leader, follower


def beat_fires_while(until, ticks: int = 4) -> None:
    """Wait until ``until()`` holds and beat's schedule task has run ``ticks`` more times
    meanwhile: whatever did not fire had its chances (jobq stats' caretaking notes)."""
    from app.beat.caretaking import caretaker_notes

    def runs() -> int:
        return int(caretaker_notes().get("fire_schedules", {}).get("runs", 0))

    start = runs()
    wait_for(lambda: until() and runs() >= start + ticks, 30,
             message=f"beat to fire its schedule task {ticks} more times")


def test_schedule_changes_take_effect_without_restarting_beat(system, tenant):
    name = "every-2s-changes"
    jobq("schedules", "add", name, "--cron", EVERY_2_SECONDS, "--intent", "system.exec.echo",
         "--tenant", tenant)
    schedule_id = sql("SELECT id::text FROM job_schedules WHERE name = :n", n=name)[0][0]
    wait_for(lambda: schedule_runs(name), timeout=15, message="the new schedule to fire")

    jobq("schedules", "pause", name)
    paused_at = sql("SELECT now()")[0][0]
    fired_before_pause = schedule_runs(name)
    beat_fires_while(lambda: (sql("SELECT now()")[0][0] - paused_at).total_seconds() >= 4.5)
    assert schedule_runs(name) == fired_before_pause  # two slots passed, beat looked, none fired

    jobq("schedules", "resume", name)
    resumed_at = sql("SELECT now()")[0][0]
    wait_for(lambda: len(schedule_runs(name)) > len(fired_before_pause), timeout=15,
             message="the resumed schedule to fire")
    after = schedule_runs(name)[len(fired_before_pause):]
    assert all(slot > resumed_at for slot, _, _ in after)  # nothing from the pause caught up
    assert not [slot for slot, _, _ in schedule_runs(name) if paused_at < slot <= resumed_at]

    jobq("schedules", "remove", name)
    jobs_at_removal = len(schedule_jobs(schedule_id))
    removed_at = sql("SELECT now()")[0][0]
    beat_fires_while(lambda: (sql("SELECT now()")[0][0] - removed_at).total_seconds() >= 3.0)
    assert len(schedule_jobs(schedule_id)) == jobs_at_removal



# --- several beats: one leads ---------------------------------------------------------------------


def test_one_beat_leads_and_the_other_takes_over_within_an_interval_when_it_dies(system):
    # Last in this module: it kills one of the module's beats (and starts another).
    from app.beat.caretaking import caretaker_notes

    leader, follower = leader_and_follower(system)
    assert leader.sent("jobq.sweep_due_jobs") > 0 and follower.sent("jobq.sweep_due_jobs") == 0

    leader.stop(signal.SIGKILL)
    killed = time.monotonic()
    wait_for(lambda: follower.sent("jobq.sweep_due_jobs") > 0, timeout=15, interval=0.05,
             message="the follower to send the sweep")
    took = time.monotonic() - killed
    print(f"\n[beat] the follower took over {took:.2f}s after the leader's SIGKILL "
          "(sweep interval 0.5 s)")
    assert "this beat leads" in follower.log()
    assert took < 2.0
    # Caretaking carries on: the sweep keeps running (as `jobq stats` shows it).
    runs = caretaker_notes()["sweep_due_jobs"]["runs"]
    wait_for(lambda: caretaker_notes()["sweep_due_jobs"]["runs"] >= runs + 3, 10,
             message="three more sweeps")

    # A beat started now follows the new leader.
    system.beats.append(spawn_beat(follower.log_path.parent, env=BEAT_ENV))
    wait_for(lambda: "another beat leads" in system.beats[-1].log(), 20,
             message="the new beat to follow")
    assert system.beats[-1].sent("jobq.sweep_due_jobs") == 0
