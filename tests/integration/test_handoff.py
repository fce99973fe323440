"""The one hand-off to the broker (app.handoff): every path stamps a job's row published before
its message goes, and un-stamps what the broker refused, so the fairness feeder sends it again.
The broker's refusal is real: a process whose broker URL names a port where nothing listens."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from tests.fixtures import ROOT, job_row, sql

#: Nothing listens there: every publish of this process is refused.
DEAD_BROKER = "redis://127.0.0.1:1/0"


def _with_dead_broker(script: str) -> dict:
    """Run ``script`` (it prints one JSON line last) in a process whose broker is down."""
    out = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True,
                         text=True, timeout=120,
                         env={**os.environ, "CELERY_BROKER_URL": DEAD_BROKER})
    assert out.returncode == 0, out.stdout + out.stderr
    assert "broker refused" in out.stderr, out.stderr  # publish.py's warning: it was tried
    return json.loads(out.stdout.strip().splitlines()[-1])


def _fair_ready(tenant: str, queue: str) -> bool:
    rows = sql("SELECT ready FROM fair_queue WHERE tenant_id = CAST(:t AS uuid) AND queue = :q",
               t=tenant, q=queue)
    return bool(rows and rows[0][0])


def test_a_job_submitted_while_the_broker_is_down_is_unstamped_for_the_feeder(tenant):
    done = _with_dead_broker(f"""
import json
from app import submit
from app.store import db
with db.session() as session:
    job = submit(session, tenant_id={tenant!r}, intent_key="system.exec.echo",
                 intent_params={{"n": 1}})
    session.commit()
print(json.dumps({{"job": job}}))
""")
    row = job_row(done["job"])
    assert (row["status"], row["published_at"]) == ("pending", None)
    assert _fair_ready(tenant, "realtime")


def test_the_sweep_stamps_before_sending_and_unstamps_what_the_broker_refused(tenant):
    [[job]] = sql(
        "INSERT INTO job_executions (tenant_id, intent_key, intent_params, queue, published_at) "
        "VALUES (CAST(:t AS uuid), 'system.exec.echo', '{}', 'realtime', "
        "        now() - interval '2 hours') RETURNING id::text", t=tenant)
    # Published long ago and never started: the sweep sends it again, into a dead broker.
    done = _with_dead_broker("""
import json
from app.beat.sweep import sweep_once
locked, published = sweep_once(republish_after=3600)
print(json.dumps({"locked": locked, "published": published}))
""")
    assert done["locked"] >= 1 and done["published"] == 0
    row = job_row(job)
    # Not left with its old stamp for the next sweep: back in the fair queue, for the feeder.
    assert (row["status"], row["published_at"]) == ("pending", None)
    assert _fair_ready(tenant, "realtime")
