"""The demo academy: realistic, complete, idempotent, and every sample intent `jobq demo`
dispatches for it completes."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
from pathlib import Path

import pytest
from typer.testing import CliRunner

from app.ops.cli import app as jobq_cli
from app.store import db
from handlers.demo import create_demo_academy
from handlers.demo_cli import DEMO_TENANT_NAME
from tests.academy import rows
from tests.fixtures import sql, wait_for_status

HANGUL_NAME = re.compile(r"^[가-힣]{2,4}$")


def build(tenant: str, students: int = 120) -> dict:
    with db.session() as session:
        academy = create_demo_academy(session, tenant, students=students)
        session.commit()
    return academy.as_dict()


def test_demo_academy_is_realistic_and_a_second_run_adds_nothing(tenant):
    first = build(tenant)
    second = build(tenant)

    assert first == second
    assert first["students"] == 120 and first["classes"] == 12
    assert first["guardians"] >= 100 and first["enrolments"] >= 120
    assert first["sessions"] > 100 and first["attendance_records"] > 1000
    assert 0 < first["open_invoices"] < first["invoices"]
    names = [r["name"] for r in rows("SELECT name FROM students WHERE tenant_id = :t", t=tenant)]
    assert all(HANGUL_NAME.match(n) for n in names), names[:5]
    assert sql("SELECT count(*) FROM students s WHERE tenant_id = :t AND NOT EXISTS ("
               "SELECT 1 FROM student_guardians g WHERE g.student_id = s.id AND g.is_primary)",
               t=tenant) == [(0,)]
    assert sql("SELECT count(*) FROM timetable_slots WHERE tenant_id = :t", t=tenant)[0][0] >= 12
    # History: sessions that ended have attendance and are closed; the rest are ahead.
    assert sql("SELECT count(*) FROM class_sessions WHERE tenant_id = :t AND ends_at < now() "
               "AND status = 'scheduled'", t=tenant) == [(0,)]
    assert sql("SELECT count(DISTINCT status) FROM attendance_records WHERE tenant_id = :t",
               t=tenant) == [(4,)]


def _demo_jobs() -> list[str]:
    return [r["id"] for r in rows(
        "SELECT j.id::text FROM job_executions j JOIN tenants t ON t.id = j.tenant_id "
        "WHERE t.name = :n AND j.source = 'cli'", n=DEMO_TENANT_NAME)]


@pytest.mark.usefixtures("worker")
def test_jobq_demo_prints_students_and_a_command_and_dispatches_nothing():
    before = _demo_jobs()
    result = CliRunner().invoke(jobq_cli, ["demo", "--students", "80"])

    assert result.exit_code == 0, result.output
    assert DEMO_TENANT_NAME in result.output and "students to try intents on:" in result.output
    assert _demo_jobs() == before  # nothing was asked for: the table holds no new job
    assert "dispatched" not in result.output

    # The command it prints for a newcomer to paste works as printed.
    [command] = [line.strip() for line in result.output.splitlines()
                 if "dispatch attendance.exec.notify_guardians_late" in line]
    pasted = subprocess.run(shlex.split(command), capture_output=True, text=True, timeout=90,
                            env=os.environ)
    assert pasted.returncode == 0, pasted.stderr
    assert "✓ completed" in pasted.stderr and '"sent": ' in pasted.stderr
    again = CliRunner().invoke(jobq_cli, ["demo", "--students", "80", "--no-dispatch"])
    assert again.exit_code == 0, again.output  # the old spelling still means: dispatch nothing
    assert len(_demo_jobs()) == len(before) + 1  # the pasted one


@pytest.mark.usefixtures("worker")
def test_jobq_demo_dispatch_samples_asks_for_a_sample_of_every_family_and_each_completes():
    before = set(_demo_jobs())
    result = CliRunner().invoke(jobq_cli, ["demo", "--students", "80", "--dispatch-samples"])

    assert result.exit_code == 0, result.output
    job_ids = [j for j in _demo_jobs() if j not in before]
    assert len(job_ids) >= 7 and f"dispatched {len(job_ids)} jobs" in result.output
    finished = {wait_for_status(j, timeout=60)["intent_key"]: wait_for_status(j)["status"]
                for j in job_ids}
    assert set(finished.values()) == {"completed"}, finished
    assert {k.split(".")[0] for k in finished} >= {"attendance", "billing", "class"}


def test_jobq_run_start_up_step_creates_the_demo_academy():

    from app.ops.cli.run import RunSetup
    from handlers import demo_cli
    from tests.conftest import DATABASE_URL

    noted = demo_cli.on_run(RunSetup(DATABASE_URL, None, Path("."), demo=True,
                                     jobq=".venv/bin/jobq"))
    # Its lines for jobq run's summary end with the command, calling jobq as told.
    assert noted[-1].strip().startswith(".venv/bin/jobq dispatch attendance.exec.")

    [(students,)] = sql("SELECT count(*) FROM students s JOIN tenants t ON t.id = s.tenant_id "
                        "WHERE t.name = :n", n=DEMO_TENANT_NAME)
    assert students >= 300
