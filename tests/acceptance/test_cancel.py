"""Cancelling a running job on real worker processes of each pool (solo, prefork, threads): the
run stops within 2 s, its uncommitted write is rolled back, the worker takes the job queued
behind it at once, and `jobq cancel` says what happened, including where a stop must wait."""

from __future__ import annotations

import datetime as dt
import logging
import os
import re
import signal
import subprocess
import time
from collections.abc import Iterator

import pytest

from app import cancel, submit
from app.intake.actions import run_stopped
from app.run import completions
from app.store import db, jobstore
from tests.commands import JOBQ, jobq
from tests.fixtures import (
    ROOT,
    event_kinds,
    job_events,
    job_row,
    sql,
    wait_for,
    wait_for_status,
)
from tests.intents import EFFECTS_DDL

POOLS = {
    "solo": ("-P", "solo"),
    "prefork": ("-P", "prefork", "-c", "2"),
    "threads": ("-P", "threads", "-c", "4"),
}
SLOTS = {"solo": 1, "prefork": 2, "threads": 4}
LONG = "test.exec.record_then_sleep"


@pytest.fixture(scope="module", autouse=True)
def effects_table() -> Iterator[None]:
    """The test intents' table, for this module only (the schema test compares the rest)."""
    with db.engine().begin() as conn:
        conn.exec_driver_sql(EFFECTS_DDL)
    yield
    with db.engine().begin() as conn:
        conn.exec_driver_sql("DROP TABLE test_side_effects")


def submit_job(tenant: str, intent_key: str, **params) -> str:
    with db.session() as session:
        job_id = submit(session, tenant_id=tenant, intent_key=intent_key, intent_params=params)
        session.commit()
    return job_id


def wait_recorded(job_id: str) -> None:
    """Until the run has written its (uncommitted) effect and said so in its progress."""
    wait_for(lambda: ((job_row(job_id) or {}).get("progress") or {}).get("message") == "recorded",
             timeout=30, message=f"job {job_id} to record its effect")


def effects(job_ids: list[str]) -> int:
    return sql("SELECT count(*) FROM test_side_effects WHERE job_id = ANY(CAST(:ids AS uuid[]))",
               ids=job_ids)[0][0]


def stop_lines(log: str) -> list[str]:
    return [line for line in log.splitlines() if "run stopped: job cancelled" in line]


def event_at(job_id: str, kind: str):
    return next(e["at"] for e in reversed(job_events(job_id)) if e["kind"] == kind)


@pytest.mark.slow
@pytest.mark.parametrize("pool", list(POOLS))
def test_a_cancel_stops_the_running_jobs_within_two_seconds_and_frees_the_worker(
        pool, start_worker_process, tenant):
    worker = start_worker_process(*POOLS[pool])
    running = [submit_job(tenant, LONG, seconds=60, step=0.2) for _ in range(SLOTS[pool])]
    for job_id in running:
        wait_recorded(job_id)
    queued = submit_job(tenant, "system.exec.echo", n=1)
    wait_for(lambda: job_row(queued)["published_at"] is not None, message="the next job's message")
    assert job_row(queued)["status"] == "pending"  # every slot is taken by a long run

    for job_id in running[1:]:
        assert cancel(job_id, reason="stopped by the test") == "processing"
    result = jobq("cancel", running[0])

    assert result.returncode == 0, result.stderr
    said = re.search(rf"job {running[0]} cancelled \(was processing\); its run on "
                     rf"{re.escape(worker.name)} was interrupted after (\d+\.\d s) and its "
                     r"work rolled back", result.stdout)
    assert said, result.stdout
    stops = [run_stopped(job_id, wait=5) for job_id in running]
    assert all(s is not None and s.interrupted for s in stops), stops
    # How long the run went, as its history says it.
    assert f"run interrupted after {said[1]}" in jobq("job", running[0]).stdout
    assert max(s.after for s in stops) < 2.0
    for job_id in running:
        assert job_row(job_id)["status"] == "cancelled"
        assert [k for _, k in event_kinds(job_id)] == ["created", "started", "cancelled",
                                                       "stopped"]
    assert effects(running) == 0  # each run's write, made before the cancel, was rolled back
    wait_for(lambda: len(stop_lines(worker.log())) == len(running), timeout=5,
             message="a 'run stopped' line per run in the worker's log")

    # The job queued behind the long runs ran as soon as the first of them stopped.
    done = wait_for_status(queued, "completed", timeout=10)
    first_cancel = min(event_at(job_id, "cancelled") for job_id in running)
    next_after = (done["completed_at"] - first_cancel).total_seconds()
    assert next_after < 2.5
    print(f"\n[cancel] pool={pool} runs={len(running)} stopped after "
          f"{', '.join(f'{s.after:.2f}' for s in stops)} s; the queued job completed "
          f"{next_after:.2f} s after the first cancel")


@pytest.mark.slow
@pytest.mark.parametrize("pool", ["solo", "prefork"])
def test_a_run_in_a_main_thread_is_stopped_even_inside_one_long_sleep(
        pool, start_worker_process, tenant):
    worker = start_worker_process(*POOLS[pool])
    job_id = submit_job(tenant, LONG, seconds=60, step=0)
    wait_recorded(job_id)

    result = jobq("cancel", job_id)

    assert result.returncode == 0, result.stderr
    assert re.search(r"cancelled \(was processing\); its run on .* was interrupted after "
                     r"\d+\.\d s and its work rolled back", result.stdout), result.stdout
    stopped = run_stopped(job_id)
    assert stopped is not None and stopped.interrupted and stopped.after < 2.0
    assert effects([job_id]) == 0
    assert len(stop_lines(worker.log())) == 1
    print(f"\n[cancel] pool={pool} one long time.sleep: stopped after {stopped.after:.2f} s")


@pytest.mark.slow
def test_a_threads_pool_run_blocked_in_one_long_call_stops_when_it_returns_as_the_cli_says(
        start_worker_process, tenant):
    worker = start_worker_process(*POOLS["threads"])
    # Long enough that the cancel's 3 s of watching end inside the call, however late a loaded
    # machine lets this test see the run start.
    job_id = submit_job(tenant, LONG, seconds=12, step=0)
    wait_recorded(job_id)

    result = jobq("cancel", job_id)

    assert result.returncode == 0, result.stderr
    assert f"job {job_id} cancelled (was processing); its run on {worker.name} has not " \
           "stopped within 3 s" in result.stdout
    said = " ".join(result.stdout.split())
    assert "It stops at its next Python step: a call blocked in C code finishes first" in said
    assert "on a threads-pool worker also a long sleep" in said
    assert job_row(job_id)["status"] == "cancelled"
    # Meanwhile the pool's other threads take new work.
    echo = submit_job(tenant, "system.exec.echo", n=2)
    assert wait_for_status(echo, "completed", timeout=5)["status"] == "completed"
    assert run_stopped(job_id) is None  # still inside its sleep

    stopped = run_stopped(job_id, wait=15)
    assert stopped is not None and stopped.interrupted
    assert stopped.ran_seconds is not None and 11.9 <= stopped.ran_seconds < 13.5
    assert effects([job_id]) == 0
    assert [k for _, k in event_kinds(job_id)] == ["created", "started", "cancelled", "stopped"]
    assert len(stop_lines(worker.log())) == 1
    print(f"\n[cancel] pool=threads one long time.sleep: stopped {stopped.after:.2f} s after "
          f"the cancel, when the call returned ({stopped.ran_seconds:.2f} s into the run)")


@pytest.mark.slow
def test_ctrl_c_of_a_solo_worker_is_not_held_by_its_cancelled_run(start_worker_process, tenant):
    worker = start_worker_process(*POOLS["solo"])
    job_id = submit_job(tenant, LONG, seconds=60, step=0.2)
    wait_recorded(job_id)

    assert cancel(job_id) == "processing"
    asked = time.monotonic()
    worker.proc.send_signal(signal.SIGINT)
    worker.proc.wait(timeout=15)
    exited_after = time.monotonic() - asked

    assert exited_after < 5.0, worker.log()[-3000:]
    assert job_row(job_id)["status"] == "cancelled"
    assert run_stopped(job_id) is not None
    assert effects([job_id]) == 0
    print(f"\n[cancel] solo worker exited {exited_after:.2f} s after Ctrl-C with a cancelled run")


def test_a_run_that_finishes_as_its_job_is_cancelled_is_recorded_and_the_cli_says_so(
        tenant, caplog):
    # A run the lease keeper had not looked up yet: it returns, and its completion is refused.
    job_id = sql("INSERT INTO job_executions (tenant_id, intent_key, intent_params) "
                 "VALUES (:t, 'system.exec.echo', '{}') RETURNING id::text", t=tenant)[0][0]
    owner = "elsewhere:1:0123abcd"
    with db.status_conn() as conn:
        claimed, _, _ = jobstore.claim(conn, job_id, worker="realtime@elsewhere", owner=owner,
                                 lease=30, default_max_retries=0)
    assert claimed is not None
    cli = subprocess.Popen([*JOBQ, "cancel", job_id], stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True, cwd=ROOT,
                           env={**os.environ, "COLUMNS": "220"})
    wait_for_status(job_id, "cancelled")

    with caplog.at_level(logging.WARNING, logger="jobq.completions"):
        completions.writer.add(jobstore.Outcome(job_id, owner, "realtime@elsewhere", 1, {"n": 1},
                                             {"elapsed_ms": 1500.0}, dt.datetime.now(dt.UTC)))
        completions.writer.flush()
    out, err = cli.communicate(timeout=30)

    assert cli.returncode == 0, err
    assert re.search(rf"job {job_id} cancelled \(was processing\); its run on "
                     r"realtime@elsewhere finished first after 1\.5 s, before it could be "
                     "stopped: "
                     "its work was rolled back and its result discarded", out), out
    assert "run finished first after 1.5 s" in jobq("job", job_id).stdout
    row = job_row(job_id)
    assert row["status"] == "cancelled" and row["result"] is None
    stopped = job_events(job_id)[-1]
    assert stopped["kind"] == "stopped"
    assert stopped["detail"] == {"ran_ms": 1500.0, "interrupted": False, "reason": "cancelled"}
    assert "run stopped: job cancelled as it finished" in caplog.text


@pytest.mark.slow
def test_a_run_whose_job_recovery_took_over_is_stopped_too(start_worker_process, tenant):
    from app.beat.recovery import recover_once

    worker = start_worker_process(*POOLS["solo"])
    job_id = submit_job(tenant, LONG, seconds=60, step=0.2)
    wait_recorded(job_id)

    def take_over() -> bool:
        # As if the worker had stopped renewing its lease for longer than any run may last:
        # while it holds its liveness lock, a lease lapsed any less keeps the job its own.
        sql("UPDATE job_executions SET lease_expires_at = now() - interval '2 hours' "
            "WHERE id = CAST(:id AS uuid)", id=job_id)
        return any(r.id == job_id for r in recover_once())

    wait_for(take_over, timeout=10, message="recovery to take the job over")
    stopped = wait_for(
        lambda: next((e for e in job_events(job_id) if e["kind"] == "stopped"), None),
        timeout=5, message="the old run's stopped event")

    assert stopped["detail"]["reason"] == "taken over" and stopped["detail"]["interrupted"]
    assert [k for _, k in event_kinds(job_id)] == ["created", "started", "lost", "failed",
                                                   "stopped"]
    assert job_row(job_id)["status"] == "failed"  # recovery's verdict (no retries), kept
    assert effects([job_id]) == 0
    assert "run stopped: job taken over" in worker.log()
    print(f"\n[cancel] solo run taken over by recovery: stopped "
          f"{(stopped['at'] - event_at(job_id, 'lost')).total_seconds():.2f} s "
          "after")
