"""`jobq watch`: a real `jobq` process following the table while an in-thread worker runs jobs;
into a pipe it writes one line per change, filtered as `jobq jobs` filters."""

from __future__ import annotations

import os
import subprocess
import time

import pytest

from app.intake.submit import submit
from app.store import db
from tests.commands import JOBQ
from tests.fixtures import ROOT, make_tenant, wait_for_status

pytestmark = pytest.mark.usefixtures("worker")


def submit_job(tenant: str, intent_key: str, **params) -> str:
    with db.session() as session:
        job_id = submit(session, tenant_id=tenant, intent_key=intent_key, intent_params=params)
        session.commit()
    return job_id


def test_watch_writes_a_line_per_change_of_the_jobs_its_filter_chooses():
    watched, other = make_tenant(), make_tenant()
    old = submit_job(watched, "system.exec.echo")
    wait_for_status(old, "completed")
    watcher = subprocess.Popen([*JOBQ, "watch", "--tenant", watched, "--for", "12"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               cwd=ROOT, env={**os.environ, "COLUMNS": "200"})
    try:
        time.sleep(2)  # its first look: the finished job, as it is
        new = submit_job(watched, "system.exec.sleep", seconds=1.5)
        elsewhere = submit_job(other, "system.exec.echo")
        wait_for_status(new, "completed")
        wait_for_status(elsewhere, "completed")
        out, errors = watcher.communicate(timeout=30)
    finally:
        if watcher.poll() is None:
            watcher.kill()
    assert watcher.returncode == 0, errors
    lines = [" ".join(line.split()) for line in out.splitlines()]
    first_look = [line for line in lines if old[:8] in line]
    assert len(first_look) == 1 and first_look[0].endswith("system.exec.echo new completed")
    mine = [line for line in lines if new[:8] in line]
    assert mine[-1].endswith("processing → completed") or mine[-1].endswith(
        "pending → completed"), lines
    assert len(mine) >= 2 and "system.exec.sleep" in mine[0]
    assert not any(elsewhere[:8] in line for line in lines)
