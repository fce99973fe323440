"""The `jobq` command as a user runs it: a real subprocess against the test database and broker,
asserting what it prints and the exit code scripts rely on (0 ok, 1 failure, 2 bad arguments).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
import requests
from rich.text import Text

from app.broker.publish import Outgoing, publish
from app.ops.cli.run import worker_commands as _worker_commands
from app.ops.embedded import free_port
from tests.academy import late_fees, overdue_invoices
from tests.commands import JOBQ, jobq, one_error_line
from tests.fixtures import (
    event_kinds,
    job_events,
    job_row,
    make_tenant,
    sql,
    wait_for,
    wait_for_status,
)

pytestmark = pytest.mark.usefixtures("worker")

def dispatched(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 0, result.stderr
    job_id = result.stdout.strip()
    uuid.UUID(job_id)
    return job_id


# --- help and bad arguments ------------------------------------------------------------------


@pytest.mark.parametrize("command", [
    [], ["run"], ["migrate"], ["dispatch"], ["jobs"], ["job"], ["retry"], ["cancel"], ["stats"],
    ["flower"], ["intents"], ["intents", "check"], ["tenants"], ["tenants", "create"],
    ["tenants", "suspend"], ["tenants", "resume"], ["tenants", "delete"],
])
def test_every_command_has_help(command):
    result = jobq(*command, "--help")
    assert result.returncode == 0, result.stderr
    assert "Usage: jobq" in result.stdout


@pytest.mark.parametrize(("args", "says"), [
    (["dispatch", "system.exec.echo"], "Missing option '--tenant'"),
    (["dispatch", "system.exec.echo", "-t", "{tenant}", "-p", "novalue"], "'novalue' is not key=value"),
    (["dispatch", "system.exec.echo", "-t", "{tenant}", "--params-json", "[1]"], "must be a JSON object"),
    (["dispatch", "system.exec.echo", "-t", "no such academy"], "no tenant 'no such academy'"),
    (["jobs", "--since", "yesterday"], "'yesterday' is neither a duration"),
    (["jobs", "--since", "99999999999d"], "more than 36500 days"),
    (["jobs", "--until", "yesterday"], "'yesterday' is neither a duration"),
    (["watch", "--since", "1h", "--until", "2h"], "'2h' is not after --since '1h'"),
    (["stats", "--since", "9999999999999999999999s"], "more than 36500 days"),
    (["jobs", "--status", "done"], "'done' is not one of pending, processing"),
    (["jobs", "--limit", "0"], "--limit"),
    (["jobs", "-p", "2"], "No such option: -p"),  # -p is --param (dispatch, retry); pages: --page
    (["job", "xyz"], "'xyz' is not a job id"),
    (["job", "3f2a"], "too short"),
    (["retry"], "give a job id, or filters"),
    (["retry", "--status", "completed"], "only failed and cancelled jobs can be retried"),
    (["nonsense"], "No such command 'nonsense'"),
])
def test_bad_arguments_print_one_line_and_exit_2(tenant, args, says):
    result = jobq(*[a.format(tenant=tenant) for a in args])
    assert result.returncode == 2, result.stderr
    assert says in one_error_line(result)


def test_unknown_job_id_says_so_and_exits_1():
    stranger = str(uuid.uuid4())
    for command in (["job", stranger], ["retry", stranger], ["cancel", stranger],
                    ["job", stranger[:8], "--watch"]):
        result = jobq(*command)
        assert result.returncode == 1, (command, result.stderr)
        assert f"no job {command[1]}" in one_error_line(result)


def test_unreachable_database_is_one_line_without_its_password():
    result = jobq("jobs", env={"DATABASE_URL": "postgresql://jobq:db-secret-42@127.0.0.1:1/jobq"})
    assert result.returncode == 1
    line = one_error_line(result)
    assert "cannot reach the database" in line
    assert "db-secret-42" not in result.stderr + result.stdout


def test_no_database_configured_is_explained(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "CELERY_BROKER_URL")}
    result = jobq("jobs", env={**env, "JOBQ_HOME": str(tmp_path)}, replace_env=True)
    assert result.returncode == 2
    assert "DATABASE_URL is not set" in one_error_line(result)


# --- dispatch --------------------------------------------------------------------------------


def test_dispatch_prints_the_job_id_and_the_job_runs_with_typed_params(tenant):
    result = jobq("dispatch", "system.exec.echo", "--tenant", tenant,
                  "--params-json", '{"class": "고1 수학", "n": 1}',
                  "-p", "n=3", "-p", "flag=true", "-p", "phone=010-1234-5678", "-p", "code=007")
    job_id = dispatched(result)
    assert "dispatched system.exec.echo" in result.stderr

    row = wait_for_status(job_id, "completed")
    assert row["source"] == "cli"
    assert row["result"] == {"class": "고1 수학", "n": 3, "flag": True,
                             "phone": "010-1234-5678", "code": "007"}


def test_text_fields_stay_text_when_the_schema_says_so(tenant):
    # ``seconds`` is a number in the schema: "0.2" becomes 0.2; an echo field stays JSON-typed.
    job_id = dispatched(jobq("dispatch", "system.exec.sleep", "-t", tenant, "-p", "seconds=0.2"))
    assert wait_for_status(job_id, "completed")["intent_params"] == {"seconds": 0.2}


def test_a_reused_idempotency_key_for_another_request_exits_2_naming_it(tenant):
    key = f"fees-{uuid.uuid4().hex[:8]}"
    asked = ["dispatch", "system.exec.echo", "-t", tenant, "--idempotency-key", key,
             "--run-at", "2099-03-01T09:00"]
    first = dispatched(jobq(*asked, "-p", "n=1"))
    before = job_row(first)
    assert dispatched(jobq(*asked, "-p", "n=1")) == first
    clash = jobq(*asked, "-p", "n=2")
    assert clash.returncode == 2, clash.stdout + clash.stderr
    assert clash.stdout == ""
    line = one_error_line(clash)
    assert (f"--idempotency-key {key!r} was already used for a different request (job {first})"
            in line)
    assert "recorded as failed" not in line
    assert sql("SELECT count(*) FROM job_executions WHERE tenant_id = :t", t=tenant) == [(1,)]
    assert job_row(first) == before


def test_dispatch_by_tenant_name():
    name = f"해오름 수학학원 {uuid.uuid4().hex[:4]}"
    tenant_id = make_tenant(name)
    job_id = dispatched(jobq("dispatch", "system.exec.echo", "--tenant", name))
    assert str(wait_for_status(job_id, "completed")["tenant_id"]) == tenant_id


@pytest.mark.smoke
def test_dispatch_wait_shows_progress_and_the_outcome(tenant):
    result = jobq("dispatch", "system.exec.sleep", "-t", tenant, "-p", "seconds=1.5", "--wait")
    assert result.returncode == 0, result.stderr
    out = result.stderr
    assert "attempt 1  started" in out
    assert "✓ completed in 1." in out
    assert 'result: {"slept": 1.5}' in out


def test_dispatch_wait_exits_1_and_says_why_when_the_job_fails(tenant):
    result = jobq("dispatch", "system.exec.flaky", "-t", tenant, "-p", "failures=5",
                  "--max-retries", "1", "--wait")
    assert result.returncode == 1
    assert "retry" in result.stderr
    assert ("✗ failed after 2 attempts: TransientError: flaky: planned failure 2 of 5"
            in result.stderr)


def test_refused_dispatch_is_one_line_exit_2_and_still_audited(tenant):
    result = jobq("dispatch", "system.exec.sleep", "-t", tenant, "-p", "seconds=soon")
    assert result.returncode == 2
    line = one_error_line(result)
    assert "invalid intent_params for 'system.exec.sleep': seconds:" in line
    job_id = re.search(r"recorded as failed job ([0-9a-f-]{36})", line).group(1)
    row = job_row(job_id)
    assert row["status"] == "failed" and row["source"] == "cli"

    unknown = jobq("dispatch", "system.exec.ecco", "-t", tenant)
    assert unknown.returncode == 2
    assert "did you mean 'system.exec.echo'" in one_error_line(unknown)


def test_run_at_keeps_the_job_pending_until_then(tenant):
    job_id = dispatched(jobq("dispatch", "system.exec.echo", "-t", tenant, "--run-at", "+2h"))
    row = job_row(job_id)
    assert row["status"] == "pending"
    expected = dt.datetime.now(dt.UTC) + dt.timedelta(hours=2)
    assert abs((row["run_at"] - expected).total_seconds()) < 30

    listed = jobq("jobs", "--tenant", tenant, "--status", "pending")
    assert job_id[:8] in listed.stdout and "pending" in listed.stdout


# --- jobs and job ------------------------------------------------------------------------------


def _completed_echo(tenant: str, **params) -> str:
    job_id = dispatched(jobq("dispatch", "system.exec.echo", "-t", tenant,
                             "--params-json", json.dumps(params)))
    wait_for_status(job_id, "completed")
    return job_id


def test_jobs_lists_newest_first_with_filters_and_pages(tenant):
    ids = [_completed_echo(tenant, n=i) for i in range(3)]
    flaky = dispatched(jobq("dispatch", "system.exec.flaky", "-t", tenant, "-p", "failures=3",
                            "--max-retries", "0"))
    wait_for_status(flaky, "failed")

    listed = json.loads(jobq("jobs", "--tenant", tenant, "--json").stdout)
    assert [j["id"] for j in listed] == [flaky, *reversed(ids)]

    page2 = json.loads(jobq("jobs", "-t", tenant, "--limit", "2", "--page", "2", "--json").stdout)
    assert [j["id"] for j in page2] == [ids[1], ids[0]]

    failed = json.loads(jobq("jobs", "-t", tenant, "--status", "failed", "--json").stdout)
    assert [j["id"] for j in failed] == [flaky]
    family = json.loads(jobq("jobs", "-t", tenant, "--intent", "system.exec.e*", "--json").stdout)
    assert {j["id"] for j in family} == set(ids)
    assert json.loads(jobq("jobs", "-t", tenant, "--since", "1h", "--json").stdout)
    # The window's end: one job backdated a day, the others created just now.
    sql("UPDATE job_executions SET created_at = now() - interval '1 day' WHERE id = :id",
        id=ids[0])
    older = json.loads(jobq("jobs", "-t", tenant, "--until", "1h", "--json").stdout)
    assert [j["id"] for j in older] == [ids[0]]
    assert [j["id"] for j in json.loads(jobq(
        "jobs", "-t", tenant, "--since", "2d", "--until", "12h", "--json").stdout)] == [ids[0]]

    table = jobq("jobs", "--tenant", tenant, "--limit", "2")
    assert table.returncode == 0
    lines = table.stdout.splitlines()
    # The times are the academies' (JOBQ_TIMEZONE, Asia/Seoul here), and the header says so.
    assert lines[0].split()[:6] == ["id", "created", "(KST)", "tenant", "intent", "status"]
    assert flaky[:8] in lines[1] and "failed" in lines[1] and "planned failure 1 of 3" in lines[1]
    assert "older: add --page 2" in table.stderr


def test_job_shows_the_row_and_every_attempt_with_its_error(tenant):
    job_id = dispatched(jobq("dispatch", "system.exec.flaky", "-t", tenant, "-p", "failures=2"))
    wait_for_status(job_id, "completed")

    shown = jobq("job", job_id[:8])
    assert shown.returncode == 0, shown.stderr
    out = shown.stdout
    assert f"job       {job_id}" in out
    assert re.search(r"status\s+completed", out)
    assert re.search(r"retries\s+2 of 5", out)
    history = out[out.index("history"):]
    assert [line.split()[2:4] for line in history.splitlines() if " started " in line] == [
        ["1", "started"], ["2", "started"], ["3", "started"]]
    assert "again in" in history and "TransientError: flaky: planned failure 1 of 2" in history
    assert "TransientError: flaky: planned failure 2 of 2" in history
    assert "completed" in history.splitlines()[-1]

    as_json = json.loads(jobq("job", job_id, "--json").stdout)
    assert as_json["job"]["status"] == "completed"
    assert [(e["attempt"], e["kind"]) for e in as_json["events"]] == event_kinds(job_id)


def test_job_traceback_of_a_failed_attempt(tenant):
    job_id = sql("INSERT INTO job_executions (tenant_id, intent_key, intent_params) "
                 "VALUES (:t, 'system.exec.sleep', '{\"seconds\": -1}') RETURNING id::text",
                 t=tenant)[0][0]
    publish([Outgoing(job_id, tenant, "system.exec.sleep", "realtime")])  # no beat sweep here
    wait_for_status(job_id, "failed")
    shown = jobq("job", job_id, "--traceback")
    assert "Traceback (most recent call last)" in shown.stdout
    assert "PermanentError" in shown.stdout
    assert f"jobq retry {job_id}" in shown.stderr


def test_job_never_shows_secret_params(tenant):
    job_id = _completed_echo(tenant, password="hunter2-secret", api_token="tok-9f8e7d",
                             note="ok")
    for args in (["job", job_id], ["job", job_id, "--json"], ["jobs", "-t", tenant, "--json"]):
        out = jobq(*args).stdout
        assert "hunter2-secret" not in out and "tok-9f8e7d" not in out
        assert "***" in out and "ok" in out


def test_job_watch_follows_a_running_job_to_its_end(tenant):
    job_id = dispatched(jobq("dispatch", "system.exec.sleep", "-t", tenant, "-p", "seconds=2"))
    watched = jobq("job", job_id, "--watch")
    assert watched.returncode == 0, watched.stderr
    assert f"job {job_id}  system.exec.sleep" in watched.stdout
    assert "attempt 1  started" in watched.stdout
    assert "✓ completed in 2." in watched.stdout


# --- retry and cancel --------------------------------------------------------------------------


def test_cancel_then_retry_are_audited_and_the_job_runs(tenant):
    job_id = dispatched(jobq("dispatch", "system.exec.echo", "-t", tenant, "--run-at", "+1h",
                             "-p", "x=1"))
    cancelled = jobq("cancel", job_id, "--reason", "wrong academy")
    assert cancelled.returncode == 0, cancelled.stderr
    assert f"job {job_id} cancelled (was pending)" in cancelled.stdout
    assert job_row(job_id)["status"] == "cancelled"
    again = jobq("cancel", job_id)
    assert again.returncode == 1
    assert "is cancelled: only pending or processing jobs can be cancelled" in one_error_line(again)

    retried = jobq("retry", job_id, "--wait")
    assert retried.returncode == 0, retried.stderr
    assert "is pending again (was cancelled)" in retried.stdout
    assert "✓ completed" in retried.stdout
    assert [k for _, k in event_kinds(job_id)] == [
        "created", "cancelled", "requeued", "started", "completed"]
    by = {e["kind"]: e["detail"]["by"] for e in job_events(job_id)
          if e["kind"] in ("cancelled", "requeued")}
    assert by["cancelled"].startswith("cli:") and by["requeued"].startswith("cli:")
    assert job_row(job_id)["error_message"] is None


def test_cancel_a_running_job_says_how_long_its_run_went_as_its_history_does(tenant):
    job_id = dispatched(jobq("dispatch", "system.exec.sleep", "-t", tenant, "-p", "seconds=20"))
    # A second into its run (it reports progress each second), so how long the run went and
    # how soon the cancel stopped it differ.
    wait_for(lambda: ((job_row(job_id) or {}).get("progress") or {}).get("done", 0) >= 1,
             timeout=30, message="the run's first second")
    result = jobq("cancel", job_id)
    assert result.returncode == 0, result.stderr
    said = re.search(rf"job {job_id} cancelled \(was processing\); its run on \S+ was "
                     r"interrupted after (\d+\.\d s) and its work rolled back", result.stdout)
    assert said, result.stdout
    assert float(said[1].split()[0]) >= 1.0
    assert job_row(job_id)["status"] == "cancelled"
    assert [k for _, k in event_kinds(job_id)] == ["created", "started", "cancelled", "stopped"]
    shown = jobq("job", job_id)
    assert f"run interrupted after {said[1]} (job cancelled)" in shown.stdout, shown.stdout


def test_cancel_a_pending_job_says_it_will_not_run(tenant):
    job_id = dispatched(jobq("dispatch", "system.exec.echo", "-t", tenant, "--run-at", "+1h"))
    result = jobq("cancel", job_id)
    assert result.returncode == 0, result.stderr
    assert f"job {job_id} cancelled (was pending); it will not run" in result.stdout


def test_a_job_refused_for_its_parameters_is_retried_only_with_corrected_ones(tenant):
    refused = jobq("dispatch", "system.exec.sleep", "-t", tenant, "-p", "seconds=soon")
    assert refused.returncode == 2
    job_id = re.search(r"recorded as failed job ([0-9a-f-]{36})", refused.stderr).group(1)

    # `jobq job` does not offer a retry that can only fail again; it says what can work.
    shown = jobq("job", job_id)
    assert f"run it again: jobq retry {job_id}" not in shown.stderr
    assert f"jobq retry {job_id} --params-json" in shown.stderr
    assert "pydantic" not in shown.stdout + shown.stderr
    again = jobq("retry", job_id)
    assert again.returncode == 1
    line = one_error_line(again)
    assert "would fail again" in line and "seconds: Input should be a valid number" in line
    assert job_row(job_id)["status"] == "failed"

    wrong = jobq("retry", job_id, "--params-json", '{"seconds": -1}')
    assert wrong.returncode == 2
    assert "seconds: Input should be greater than or equal to 0" in one_error_line(wrong)

    fixed = jobq("retry", job_id, "-p", "seconds=0.1", "--wait")
    assert fixed.returncode == 0, fixed.stderr
    assert "pending again on new parameters" in fixed.stdout and "✓ completed" in fixed.stdout
    row = job_row(job_id)
    assert row["intent_params"] == {"seconds": 0.1} and row["max_retries"] == 3
    requeued = next(e for e in job_events(job_id) if e["kind"] == "requeued")
    assert requeued["detail"]["params"] == {"old": {"seconds": "soon"}, "new": {"seconds": 0.1}}
    assert requeued["detail"]["by"].startswith("cli:")
    assert '{"seconds": "soon"} → {"seconds": 0.1}' in jobq("job", job_id).stdout


def test_a_job_whose_parameters_were_not_kept_never_runs_on_the_intents_defaults(tenant):
    # Issue 22 (8): refused for oversized parameters, the row keeps none; a plain retry ran
    # late fees at the intent's default 5% after 7 days instead of the 1% after 30 asked for.
    old, recent = overdue_invoices(tenant)
    asked = {"percent": 1, "grace_days": 30, "note": "x" * 70_000}
    refused = jobq("dispatch", "billing.exec.apply_late_fees", "-t", tenant,
                   "--params-json", json.dumps(asked))
    assert refused.returncode == 2
    assert "intent_params is 70,0" in refused.stderr
    job_id = re.search(r"recorded as failed job ([0-9a-f-]{36})", refused.stderr).group(1)
    assert job_row(job_id)["intent_params"] is None

    shown = jobq("job", job_id)
    assert f"run it again: jobq retry {job_id}" not in shown.stderr
    assert "parameters were not kept" in shown.stderr
    assert f"jobq retry {job_id} --params-json" in shown.stderr

    for args in ([], ["--wait"], ["-p", "percent=1"]):
        again = jobq("retry", job_id, *args)
        assert again.returncode == 2, (args, again.stdout, again.stderr)
        line = one_error_line(again)
        assert f"job {job_id} was refused and its parameters were not kept" in line
        assert f"jobq retry {job_id} --params-json" in line
    row = job_row(job_id)
    assert (row["status"], row["intent_params"]) == ("failed", None)
    assert [k for _, k in event_kinds(job_id)] == ["refused"]
    assert late_fees(tenant) == {old.id: 0, recent.id: 0}

    # Bulk retries leave it out too, saying why.
    bulk = jobq("retry", "--status", "failed", "--tenant", tenant)
    assert "left out 1 job(s)" in bulk.stderr
    assert job_row(job_id)["status"] == "failed"

    fixed = jobq("retry", job_id, "--params-json",
                 '{"percent": 1, "grace_days": 30, "notify_guardians": false}', "--wait")
    assert fixed.returncode == 0, fixed.stdout + fixed.stderr
    assert "pending again on new parameters" in fixed.stdout and "✓ completed" in fixed.stdout
    row = job_row(job_id)
    assert (row["intent_params"]["percent"], row["intent_params"]["grace_days"]) == (1, 30)
    assert row["result"]["invoices"] == 1
    assert late_fees(tenant) == {old.id: 5_000, recent.id: 0}


def test_a_rerun_s_started_row_names_its_attempt(tenant):
    job_id = dispatched(jobq("dispatch", "system.exec.flaky", "-t", tenant, "-p", "failures=1",
                             "--max-retries", "0"))
    wait_for_status(job_id, "failed")
    rerun = jobq("retry", job_id, "-p", "failures=0", "--wait")
    assert rerun.returncode == 0, rerun.stderr
    history = jobq("job", job_id).stdout.split("history")[1]
    assert [line.split()[2:4] for line in history.splitlines() if " started " in line] == [
        ["1", "started"], ["1", "started"]], history


def test_retry_of_a_completed_job_is_refused(tenant):
    job_id = _completed_echo(tenant)
    result = jobq("retry", job_id)
    assert result.returncode == 1
    assert "is completed: only failed or cancelled jobs can be retried" in one_error_line(result)


def test_retry_of_a_suspended_tenants_job_is_refused():
    tenant = make_tenant()
    job_id = dispatched(jobq("dispatch", "system.exec.echo", "-t", tenant, "--run-at", "+1h"))
    assert jobq("cancel", job_id).returncode == 0
    assert jobq("tenants", "suspend", tenant).returncode == 0
    result = jobq("retry", job_id)
    assert result.returncode == 1
    assert "which is suspended: resume it first" in one_error_line(result)


def test_bulk_retry_by_status_intent_and_window(tenant):
    failed = []
    for _ in range(3):
        job_id = dispatched(jobq("dispatch", "system.exec.flaky", "-t", tenant,
                                 "-p", "failures=1", "--max-retries", "0"))
        failed.append(job_id)
    done = _completed_echo(tenant)
    for job_id in failed:
        wait_for_status(job_id, "failed")

    dry = jobq("retry", "--status", "failed", "--intent", "system.exec.flaky", "--since", "1h",
               "--tenant", tenant, "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert re.search(r"system\.exec\.flaky\s+3", dry.stdout)
    assert "would retry 3 job(s)" in dry.stdout
    assert all(job_row(j)["status"] == "failed" for j in failed)

    real = jobq("retry", "--status", "failed", "--intent", "system.exec.flaky", "--since", "1h",
                "--tenant", tenant)
    assert real.returncode == 0, real.stderr
    assert "retried 3 of 3 job(s)" in real.stdout
    for job_id in failed:  # flaky fails its first attempt again: a fresh start, audited
        wait_for(lambda j=job_id: [k for _, k in event_kinds(j)][-1] == "failed"
                 and "requeued" in [k for _, k in event_kinds(j)], message="the rerun")
        assert [k for _, k in event_kinds(job_id)] == [
            "created", "started", "failed", "requeued", "started", "failed"]
    assert [k for _, k in event_kinds(done)] == ["created", "started", "completed"]


# --- stats, intents, tenants -----------------------------------------------------------------


def test_stats_counts_by_status_and_intent_with_run_times(tenant):
    for _ in range(2):
        _completed_echo(tenant)
    sleeper = dispatched(jobq("dispatch", "system.exec.sleep", "-t", tenant, "-p", "seconds=0.6"))
    flaky = dispatched(jobq("dispatch", "system.exec.flaky", "-t", tenant, "-p", "failures=3",
                            "--max-retries", "0"))
    wait_for_status(sleeper, "completed")
    wait_for_status(flaky, "failed")

    data = json.loads(jobq("stats", "--tenant", tenant, "--since", "1h", "--json").stdout)
    by_key = {r["intent_key"]: r for r in data["intents"]}
    assert by_key["system.exec.echo"]["completed"] == 2
    assert by_key["system.exec.flaky"]["failed"] == 1
    assert by_key["system.exec.flaky"]["failure_rate"] == 1.0
    assert data["overall"]["total"] == 4
    assert data["overall"]["failure_rate"] == pytest.approx(0.25)
    assert by_key["system.exec.sleep"]["run_p50"] == pytest.approx(0.6, abs=0.3)
    assert data["slowest"][0] == "system.exec.sleep"

    table = jobq("stats", "--tenant", tenant, "--since", "1h")
    assert table.returncode == 0
    assert re.search(r"system\.exec\.echo\s+2\s+0\s+0\s+2\s+0", table.stdout)
    assert "4 jobs, failure rate 25.0%" in table.stdout
    assert "slowest (p95): system.exec.sleep" in table.stdout


def test_stats_until_ends_the_window_and_refuses_one_that_ends_before_it_starts(tenant):
    for hours_ago in (3, 1):
        sql("INSERT INTO job_executions (tenant_id, intent_key, status, created_at, executed_at, "
            "completed_at) SELECT CAST(:t AS uuid), 'system.exec.echo', 'completed', at, at, at "
            "FROM (SELECT now() - make_interval(hours => :h) AS at) a", t=tenant, h=hours_ago)
    data = json.loads(jobq("stats", "--tenant", tenant, "--since", "4h", "--until", "2h",
                           "--json").stdout)
    assert (data["overall"]["total"], data["until"]) == (1, "2h")
    assert json.loads(jobq("stats", "--tenant", tenant, "--since", "4h", "--json").stdout)[
        "overall"]["total"] == 2
    wrong = jobq("stats", "--since", "1h", "--until", "2h")
    assert wrong.returncode == 2 and "--until" in wrong.stderr


def test_stats_shows_the_wait_before_start_of_the_academies_that_waited_longest(tenant):
    # Two jobs of this academy that waited 4,000 s and 6,000 s between due and start, as the
    # table records them (longer than any job of the whole test run can have waited, a job an
    # earlier test left behind and a later one ran included): it leads the by-tenant list.
    sql("INSERT INTO job_executions (tenant_id, intent_key, status, created_at, executed_at, "
        "completed_at) SELECT CAST(:t AS uuid), 'system.exec.echo', 'completed', "
        "now() - make_interval(secs => 7000), now() - make_interval(secs => 7000 - w), now() "
        "FROM unnest(ARRAY[4000, 6000]) w", t=tenant)
    data = json.loads(jobq("stats", "--since", "1h", "--json").stdout)
    # (Other tests' academies share the database: one may have waited longer still, a job with
    # a run_at hours back. The list is the longest p95 first, and this academy is in it.)
    p95s = [t["wait_p95"] or 0 for t in data["tenants"]]
    assert p95s == sorted(p95s, reverse=True)
    first = next(t for t in data["tenants"] if t["tenant_id"] == tenant)
    assert first["total"] == 2
    # Percentiles come from log-bucket histograms: within 4.4% of the exact 5,000 s and 5,900 s.
    assert first["wait_p50"] == pytest.approx(5000, rel=0.045)
    assert first["wait_p95"] == pytest.approx(5900, rel=0.045)
    table = jobq("stats", "--since", "1h").stdout
    assert "wait before start by tenant (longest p95 first)" in table
    line = next(row for row in table.splitlines() if f"({tenant[:8]})" in row)
    assert line.split()[-6:] == ["2", "0", "1h", "23m", "1h", "36m"], line


def test_stats_wait_starts_when_the_job_became_runnable_not_when_it_was_first_asked_for(
        tenant):
    # A refused request its caller corrected ten minutes later, and a job a person approved ten
    # minutes after it was asked for: neither waited in a queue before that.
    refused = jobq("dispatch", "system.exec.sleep", "-t", tenant, "-p", "seconds=soon")
    corrected = re.search(r"recorded as failed job ([0-9a-f-]{36})", refused.stderr).group(1)
    approved = dispatched(jobq("dispatch", "system.exec.echo", "-t", tenant,
                               "--requires-approval"))
    sql("UPDATE job_executions SET created_at = created_at - interval '10 minutes' "
        "WHERE id = ANY(CAST(:ids AS uuid[]))", ids=[corrected, approved])
    assert jobq("retry", corrected, "-p", "seconds=0", "--wait").returncode == 0
    assert jobq("approve", approved).returncode == 0
    wait_for_status(approved, "completed")

    data = json.loads(jobq("stats", "--tenant", tenant, "--since", "1h", "--json").stdout)
    assert data["overall"]["total"] == 2
    assert data["overall"]["wait_p95"] < 60, data["overall"]


def test_intents_show_each_parameter_schema_and_check_passes():
    listed = jobq("intents")
    assert listed.returncode == 0
    assert "system.exec.sleep" in listed.stdout
    assert re.search(r"seconds: number ≥ 0 ≤ 3600, required — How long to sleep", listed.stdout)

    schemas = {i["key"]: i for i in json.loads(jobq("intents", "--json").stdout)}
    sleep = schemas["system.exec.sleep"]["params_schema"]
    assert sleep["properties"]["seconds"]["type"] == "number"
    assert sleep["required"] == ["seconds"]

    checked = jobq("intents", "check")
    assert checked.returncode == 0, checked.stderr
    assert "all importable" in checked.stdout


def test_tenants_create_list_suspend_resume():
    name = f"새벽별 영어학원 {uuid.uuid4().hex[:4]}"
    created = jobq("tenants", "create", name)
    assert created.returncode == 0
    tenant_id = created.stdout.strip()
    uuid.UUID(tenant_id)

    listed = jobq("tenants")
    assert any(tenant_id in line and name in line and "active" in line
               for line in listed.stdout.splitlines())

    assert "is now suspended" in jobq("tenants", "suspend", name).stdout
    refused = jobq("dispatch", "system.exec.echo", "-t", tenant_id)
    assert refused.returncode == 2
    assert "is suspended" in one_error_line(refused)
    suspended = json.loads(jobq("tenants", "--status", "suspended", "--json").stdout)
    assert tenant_id in [t["id"] for t in suspended]

    assert "is now active" in jobq("tenants", "resume", tenant_id).stdout
    assert jobq("dispatch", "system.exec.echo", "-t", tenant_id).returncode == 0

    missing = jobq("tenants", "suspend", "no such academy")
    assert missing.returncode == 1
    assert "no tenant 'no such academy'" in one_error_line(missing)


def test_tenants_set_changes_weight_and_caps_and_the_list_shows_them_with_the_backlog():
    name = f"한빛 수학학원 {uuid.uuid4().hex[:4]}"
    tenant_id = jobq("tenants", "create", name).stdout.strip()
    # Two jobs waiting, one of them due for a while (the table's clock says so).
    sql("INSERT INTO job_executions (tenant_id, intent_key, run_at) VALUES "
        "(CAST(:t AS uuid), 'system.exec.echo', now() - interval '90 seconds'), "
        "(CAST(:t AS uuid), 'system.exec.echo', now() + interval '1 hour')", t=tenant_id)

    changed = jobq("tenants", "set", name, "--weight", "2", "--max-running", "4")
    assert changed.returncode == 0, changed.stderr
    assert f"tenant {name} ({tenant_id}): weight 2, max running 4" in changed.stdout
    per_queue = jobq("tenants", "set", tenant_id, "--max-running", "1", "--queue", "bulk")
    assert "per queue: bulk 1" in per_queue.stdout

    listed = json.loads(jobq("tenants", "--json").stdout)
    [mine] = [t for t in listed if t["id"] == tenant_id]
    assert (mine["weight"], mine["max_running"], mine["backlog"], mine["running"]) == (2, 4, 2, 0)
    assert 89 <= mine["oldest_wait_s"] < 150
    assert mine["queue_caps"] == {"bulk": 1}
    line = next(row for row in jobq("tenants").stdout.splitlines() if tenant_id in row)
    backlog, running, age, weight, cap, kept = re.split(r"\s{2,}", line.strip())[-6:]
    assert (backlog, running, weight, cap, kept) == ("2", "0", "2", "4; bulk 1", "-"), line
    assert age.endswith("m") and 1.4 <= float(age[:-1]) < 2.5, age
    assert "cap (per queue)" in jobq("tenants").stdout.splitlines()[0]

    for args, says in ((["--weight", "0"], "weight must be a number above 0"),
                       (["--max-running", "-1"], "max_running must be a whole number"),
                       (["--max-running", "1", "--queue", "nope"], "queue 'nope' is not one of"),
                       (["--queue", "bulk"], "--queue caps one queue: give --max-running"),
                       ([], "nothing to change")):
        refused = jobq("tenants", "set", tenant_id, *args)
        assert refused.returncode == 2, (args, refused.stdout)
        assert says in one_error_line(refused)
    events = sql("SELECT was, by FROM tenant_events WHERE tenant_id = CAST(:t AS uuid) "
                 "AND kind = 'limits' ORDER BY at, id", t=tenant_id)
    assert [e[0] for e in events] == ["weight 1, max running unlimited",
                                      "max running on bulk unlimited"]
    assert all(e[1].startswith("cli:") for e in events)


def test_tenants_set_channel_caps_an_academys_sending_live_and_audited():
    name = f"소망 영어학원 {uuid.uuid4().hex[:4]}"
    tenant_id = jobq("tenants", "create", name).stdout.strip()

    changed = jobq("tenants", "set", name, "--channel", "kakao", "--rate", "10", "--daily", "5000")
    assert changed.returncode == 0, changed.stderr
    assert (f"tenant {name} ({tenant_id}) on kakao: rate 10/s, daily 5000, over the daily "
            "quota: wait") in " ".join(changed.stdout.split())
    failing = jobq("tenants", "set", tenant_id, "--channel", "kakao", "--over-daily", "fail")
    assert "rate 10/s, daily 5000, over the daily quota: fail" in " ".join(failing.stdout.split())
    for args, says, option in (
            (["--rate", "5"], "cap one channel: give --channel", "--channel"),
            (["--channel", "kakao", "--rate", "-2"], "rate must be messages per second",
             "--rate"),
            (["--channel", "kakao", "--over-daily", "drop"], "over_daily must be wait or fail",
             "--over-daily"),
            (["--channel", "kakao", "--rate", "5", "--weight", "2"], "set on their own",
             "--channel")):
        refused = jobq("tenants", "set", tenant_id, *args)
        assert refused.returncode == 2, (args, refused.stdout)
        assert says in one_error_line(refused) and option in refused.stderr
    events = sql("SELECT detail, by FROM tenant_events WHERE tenant_id = CAST(:t AS uuid) "
                 "AND kind = 'limits' ORDER BY at, id", t=tenant_id)
    assert [(e[0]["channel"], e[0]["rate"], e[0]["daily"], e[0]["over_daily"]) for e in events] \
        == [("kakao", 10, 5000, "wait"), ("kakao", 10, 5000, "fail")]
    assert all(e[1].startswith("cli:") for e in events)


def test_tenants_set_keeps_an_academy_s_finished_jobs_longer_recorded_and_listed():
    name = f"청구 분쟁 학원 {uuid.uuid4().hex[:4]}"
    tenant_id = jobq("tenants", "create", name).stdout.strip()

    changed = jobq("tenants", "set", name, "--keep-completed", "365", "--keep-failed", "730")
    assert changed.returncode == 0, changed.stderr
    assert (f"tenant {name} ({tenant_id}) keeps its finished jobs: completed 365 days, "
            f"failed 730 days, cancelled 90 days (default)") in " ".join(changed.stdout.split())
    [mine] = [t for t in json.loads(jobq("tenants", "--json").stdout) if t["id"] == tenant_id]
    assert (mine["keep_completed_days"], mine["keep_failed_days"],
            mine["keep_cancelled_days"]) == (365, 730, None)
    line = next(row for row in jobq("tenants", "--wide").stdout.splitlines() if tenant_id in row)
    assert line.rstrip().endswith("completed 365, failed 730"), line

    back = jobq("tenants", "set", tenant_id, "--keep-completed", "0")
    assert "completed 90 days (default), failed 730 days" in " ".join(back.stdout.split())
    refused = jobq("tenants", "set", tenant_id, "--keep-failed", "-3")
    assert refused.returncode == 2
    assert "days to keep failed jobs must be a whole number from 1" in one_error_line(refused)
    assert "--keep-failed" in refused.stderr
    events = sql("SELECT detail, by FROM tenant_events WHERE tenant_id = CAST(:t AS uuid) "
                 "AND kind = 'retention' ORDER BY at, id", t=tenant_id)
    assert [(e[0]["completed"], e[0]["failed"], e[0]["was"]["completed"]) for e in events] == [
        (365, 730, None), (None, 730, 365)]
    assert all(e[1].startswith("cli:") for e in events)


def test_tenants_and_intents_stay_whole_in_a_pipe_at_80_columns():
    # What a script (or `| grep`) reads: nothing cut short, however narrow COLUMNS is.
    name = f"서울 강남 대치동 수학 과학 전문 학원 {uuid.uuid4().hex[:6]}"
    tenant_id = jobq("tenants", "create", name).stdout.strip()
    listed = jobq("tenants", env={"COLUMNS": "80"})
    assert listed.returncode == 0
    assert any(tenant_id in line and name in line for line in listed.stdout.splitlines())

    # A narrow terminal shows the first 8 characters of an id: commands take them.
    assert "is now suspended" in jobq("tenants", "suspend", tenant_id[:8]).stdout
    assert "is now active" in jobq("tenants", "resume", tenant_id[:8]).stdout

    intents = jobq("intents", env={"COLUMNS": "80"}).stdout
    assert ("    notify_time: string, required — When the student arrived (ISO 8601; a naive "
            "time is the academy's).") in intents.splitlines()
    assert "  지각 학생 보호자에게 알림 전송: record the student late and tell the guardians." \
        in intents.splitlines()


def test_a_suspended_academy_s_pending_jobs_show_as_held_and_why():
    name = f"쉬는 학원 {uuid.uuid4().hex[:4]}"
    tenant = make_tenant(name)
    job_id = dispatched(jobq("dispatch", "system.exec.echo", "-t", tenant, "--run-at", "+1h"))
    assert jobq("tenants", "suspend", tenant).returncode == 0

    listed = jobq("jobs", "--tenant", tenant)
    line = next(row for row in listed.stdout.splitlines() if job_id[:8] in row)
    assert re.search(r"\sheld\s", line) and "pending" not in line, line
    assert f"tenant suspended: jobq tenants resume {tenant[:8]}" in line, line
    shown = jobq("job", job_id)
    assert re.search(rf"status\s+held: pending, not run while tenant {name} is suspended "
                     rf"\(jobq tenants resume {tenant[:8]}\)", shown.stdout), shown.stdout
    [as_json] = json.loads(jobq("jobs", "--tenant", tenant, "--json").stdout)
    assert (as_json["status"], as_json["held"]) == ("pending", True)

    assert jobq("tenants", "resume", tenant).returncode == 0
    line = next(row for row in jobq("jobs", "--tenant", tenant).stdout.splitlines()
                if job_id[:8] in row)
    assert " pending " in line and "held" not in line


def test_a_near_miss_academy_name_gets_a_did_you_mean_wherever_a_tenant_is_named():
    name = f"별빛 수학학원 {uuid.uuid4().hex[:4]}"
    make_tenant(name)
    near = name.replace("수학학원", "수학 학원")
    for args, code in ((["dispatch", "system.exec.echo", "--tenant", near], 2),
                       (["jobs", "--tenant", near], 2),
                       (["stats", "--tenant", near], 2),
                       (["retry", "--status", "failed", "--tenant", near], 2),
                       (["keys", "create", "--tenant", near], 2),
                       (["keys", "list", "--tenant", near], 2),
                       (["tenants", "suspend", near], 1),
                       (["tenants", "set", near, "--weight", "2"], 1),
                       (["tenants", "delete", near, "--yes"], 1)):
        result = jobq(*args)
        assert result.returncode == code, (args, result.stderr)
        line = one_error_line(result)
        assert f"no tenant {near!r} (did you mean {name!r}?" in line, (args, line)
    far = jobq("jobs", "--tenant", "전혀 다른 이름")
    assert "did you mean" not in one_error_line(far)


def test_keys_list_shows_times_in_the_academies_zone_and_says_so(tenant):
    made = jobq("keys", "create", "--tenant", tenant, "--name", "web")
    assert made.returncode == 0, made.stderr
    listed = jobq("keys", "list", "--tenant", tenant)
    header, row = listed.stdout.splitlines()[:2]
    assert "created (KST)" in header and "last used (KST)" in header, header
    [(created,)] = sql("SELECT created_at FROM api_keys WHERE tenant_id = CAST(:t AS uuid)",
                       t=tenant)
    seoul = created.astimezone(ZoneInfo("Asia/Seoul"))
    assert seoul.strftime("%Y-%m-%d %H:%M:%S") in row, row


@pytest.mark.parametrize("columns", [80, 120])
def test_jobs_give_names_their_whole_width_before_empty_columns(columns):
    name = f"대치 수학학원 {uuid.uuid4().hex[:4]}"
    tenant = make_tenant(name)
    key = "communication.exec.retry_failed_deliveries"  # 42 characters
    sql("INSERT INTO job_executions (tenant_id, intent_key, status, max_retries, created_at, "
        "executed_at, completed_at) VALUES (CAST(:t AS uuid), :k, 'completed', 5, now(), now(), "
        "now() + interval '1 second')", t=tenant, k=key)
    listed = jobq("jobs", "--tenant", tenant, env={"COLUMNS": str(columns)})
    assert listed.returncode == 0, listed.stderr
    lines = listed.stdout.splitlines()
    assert all(Text(line).cell_len <= columns for line in lines), listed.stdout
    assert key in lines[1] and "…" not in lines[1], listed.stdout
    if columns >= 120:  # room for every column, whole
        assert name in lines[1] and "1.0 s" in lines[1], listed.stdout


@pytest.mark.parametrize("columns", [80, 120])
def test_dispatch_wait_shows_a_long_result_whole_in_the_lines_it_takes(tenant, columns):
    text_ = "x" * 190
    result = jobq("dispatch", "system.exec.echo", "-t", tenant, "-p", f"text={text_}", "--wait",
                  env={"COLUMNS": str(columns)})
    assert result.returncode == 0, result.stderr
    assert all(Text(line).cell_len <= columns for line in result.stderr.splitlines())
    assert f'result: {{"text": "{text_}"}}' in result.stderr.replace("\n", ""), result.stderr


# --- jobq run ---------------------------------------------------------------------------------


@pytest.fixture
def project_folder() -> Iterator[Path]:
    """A folder like a user's clone: others may enter it (pytest's own tmp folders are 0700,
    which as root the embedded PostgreSQL, running as ``nobody``, could not enter)."""
    folder = Path(tempfile.mkdtemp(prefix="jobq-project-"))
    folder.chmod(0o755)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


@pytest.mark.slow
def test_run_starts_everything_with_no_settings_restarts_a_dead_worker_and_ctrl_c_stops_it_all(
        project_folder):
    """A fresh machine: no DATABASE_URL, no broker; embedded services under JOBQ_HOME. What the
    terminal shows is short and ends with the summary, printed once every part answers; each
    process's output is in its own log file."""
    tmp_path = project_folder
    home = tmp_path / "home"
    logs = home / "logs"
    port = free_port()
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("DATABASE_URL", "CELERY_", "JOBQ_", "FLOWER_"))}
    api_port = free_port()
    env.update({"JOBQ_HOME": str(home), "FLOWER_PORT": str(port), "JOBQ_API_PORT": str(api_port),
                "COLUMNS": "200", "PATH": "/usr/local/bin:/usr/bin:/bin"})  # no venv on PATH
    log_path = tmp_path / "run.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([*JOBQ, "run"], cwd=tmp_path, env=env, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)

    def said() -> str:
        return log_path.read_text(errors="replace")

    def flower_up() -> bool:
        try:
            return requests.get(f"http://127.0.0.1:{port}/healthcheck", timeout=1).ok
        except requests.RequestException:
            return False

    def up() -> bool:
        if proc.poll() is not None:
            raise AssertionError(f"jobq run exited early:\n{said()[-4000:]}")
        return "try it (another terminal, this folder):" in said()

    try:
        wait_for(up, 150, interval=0.2, message="jobq run's summary")
        # Printed once everything answers: nothing needs waiting for now.
        assert flower_up()
        assert requests.get(f"http://127.0.0.1:{api_port}/v1/health", timeout=2).ok
        for name in _worker_commands("celery"):
            assert " ready." in (logs / f"{name}.log").read_text(), name
        terminal = said().strip().splitlines()
        assert len(terminal) < 30, said()
        for noise in ("celery beat v", "[tasks]", "SecurityWarning", "Registered tasks",
                      "alembic", " | "):
            assert noise not in said(), noise
        assert any(line.startswith("jobq is up after") for line in terminal), said()
        assert "logs    home/logs/ (one per process: realtime.log" in said()
        # It ends with the command to paste, calling jobq as it can be called from here: not
        # on PATH, so by its path.
        command = terminal[-1].strip()
        assert command.startswith(f"{JOBQ[0]} dispatch attendance.exec.notify_guardians_late "
                                  '--tenant "데모 학원" -p student_id='), command
        if os.geteuid() == 0:  # Celery's warning is kept, in the workers' logs
            assert "running the worker with superuser privileges" in (
                logs / "realtime.log").read_text()
            assert "as root: each worker's log starts with Celery's superuser warning" in said()
        assert (home / "services.json").exists()
        # Flower's credentials, generated for this folder, shown once in the summary; they
        # work, and nothing works without them.
        shown = re.search(rf"^  Flower  http://127\.0\.0\.1:{port}/ \(user (\S+), password (\S+); "
                          rf"generated once and kept in {re.escape(str(home))}/flower-credentials",
                          log_path.read_text(errors="replace"), re.M)
        assert shown, log_path.read_text(errors="replace")[-3000:]
        login = (shown.group(1), shown.group(2))
        flower_api = f"http://127.0.0.1:{port}/api/workers"
        assert requests.get(flower_api, auth=login, timeout=10).status_code == 200
        assert requests.get(flower_api, timeout=10).status_code == 401

        # Another terminal, same folder, still no settings: the printed command, as printed.
        pasted = subprocess.run([*shlex.split(command), "--timeout", "60"], cwd=tmp_path,
                                env=env, capture_output=True, text=True, timeout=90)
        assert pasted.returncode == 0, pasted.stderr
        assert "✓ completed" in pasted.stderr and '"sent": ' in pasted.stderr
        # The HTTP API runs too, on the same services, with a key made in that terminal.
        made = subprocess.run([*JOBQ, "keys", "create", "--tenant", "데모 학원"], cwd=tmp_path,
                              env=env, capture_output=True, text=True, timeout=60)
        assert made.returncode == 0, made.stderr
        listed = requests.get(f"http://127.0.0.1:{api_port}/v1/jobs", timeout=10,
                              headers={"Authorization": f"Bearer {made.stdout.strip()}"})
        assert listed.status_code == 200
        assert "attendance.exec.notify_guardians_late" in {
            j["intent_key"] for j in listed.json()["jobs"]}

        # A worker that dies on its own is started again; nothing else stops. The terminal
        # says which, and shows the end of its log.
        def supervised() -> str:
            return (logs / "supervisor.log").read_text()

        first = int(re.search(r"realtime started \(pid=(\d+)\)", supervised()).group(1))
        os.killpg(first, signal.SIGKILL)  # the worker's whole process group, as the OOM killer
        wait_for(lambda: len(re.findall(r"realtime started \(pid=\d+\)", supervised())) == 2,
                 30, interval=0.2, message="jobq run to start the worker again")
        assert re.search(r"realtime stopped on its own \(rc=-?\d+\) after \d+ s; starting "
                         r"it again in 1 s \(restart 1\); the end of its log, "
                         r"home/logs/realtime\.log:\n  \| ", said()), said()[-3000:]
        assert "realtime@" in said().split("restart 1")[1]  # its own last lines
        wait_for(lambda: (logs / "realtime.log").read_text().count(" ready.") == 2,
                 60, interval=0.5, message="the restarted worker to be ready")
        assert proc.poll() is None and flower_up()
        again = subprocess.run([*JOBQ, "dispatch", "system.exec.echo", "--tenant", "데모 학원",
                                "--wait", "--timeout", "60"],
                               cwd=tmp_path, env=env, capture_output=True, text=True, timeout=90)
        assert again.returncode == 0, again.stderr
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGINT)  # what Ctrl-C sends
        code = proc.wait(60)
    out = said()
    assert code == 0, out[-4000:]
    assert out.strip().endswith("everything stopped"), out[-2000:]
    supervised = (logs / "supervisor.log").read_text()
    for name in [*_worker_commands("celery"), "beat", "flower", "api"]:
        assert re.search(rf"{name} started \(pid=\d+\)", supervised), name
    pids = [int(p) for p in re.findall(r"started \(pid=(\d+)\)", supervised)]
    assert pids
    for pid in pids:
        assert not _alive(pid), f"process {pid} outlived jobq run"
    # The embedded PostgreSQL and Redis (not honcho's children) are gone too.
    assert _processes_using(home) == [], "embedded services outlived jobq run"
    assert not (home / "services.json").exists()
    assert (home / "flower.db.dat").exists() or list(home.glob("flower.db*"))


def _processes_using(folder: Path) -> list[str]:
    """Command lines of live processes that name ``folder`` (its servers name their data)."""
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            text_ = cmdline.read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if str(folder) in text_ and _alive(int(cmdline.parent.name)):
            found.append(text_)
    return found


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    return not (stat.exists() and ") Z " in stat.read_text())
