"""`jobq watch`: a real `jobq` process following the table while an in-thread worker runs jobs;
into a pipe it writes one line per change, filtered as `jobq jobs` filters."""

from __future__ import annotations

import os
import re
import signal
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
    # Ctrl-C from a terminal: SIGINT as the default. A process started with SIGINT ignored
    # keeps ignoring it (as a shell's background job should), and this test's own process may
    # have it so by then: faulthandler showed the watcher asleep in its loop 30 s after SIGINT.
    watcher = subprocess.Popen([*JOBQ, "watch", "--tenant", watched, "--for", "60"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               cwd=ROOT, env={**os.environ, "COLUMNS": "200",
                                              "PYTHONFAULTHANDLER": "1"},
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    lines: list[str] = []
    try:
        assert watcher.stdout is not None
        lines.append(" ".join(watcher.stdout.readline().split()))  # its first look
        new = submit_job(watched, "system.exec.sleep", seconds=3)
        elsewhere = submit_job(other, "system.exec.echo")
        while not (new[:8] in lines[-1] and lines[-1].endswith(" completed")):
            line = watcher.stdout.readline()
            assert line, f"jobq watch ended early after {lines}"
            lines.append(" ".join(line.split()))
        wait_for_status(elsewhere, "completed")
        time.sleep(1.5)  # a look after the other academy's job ended
        watcher.send_signal(signal.SIGINT)
        try:
            rest, errors = watcher.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            # Where it hangs: faulthandler's dump of every thread on SIGABRT.
            watcher.send_signal(signal.SIGABRT)
            _, errors = watcher.communicate(timeout=10)
            pytest.fail("jobq watch did not stop 30 s after SIGINT; its threads:\n"
                        + errors[-6000:])
    finally:
        if watcher.poll() is None:
            watcher.kill()
    lines += [" ".join(line.split()) for line in rest.splitlines()]
    assert watcher.returncode == 0, errors
    assert old[:8] in lines[0] and lines[0].endswith("system.exec.echo new completed")
    mine = [line for line in lines if new[:8] in line]
    assert re.search(r"system\.exec\.sleep new (pending|processing)", mine[0]), mine
    assert mine[-1].endswith("processing → completed"), lines
    assert not any(elsewhere[:8] in line for line in lines)
