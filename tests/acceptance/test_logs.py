"""Log lines: one per state change, carrying job id, tenant, intent and attempt, as JSON with
LOG_FORMAT=json; passwords in URLs and tokens never appear, whatever the format.
"""

from __future__ import annotations

import json
import uuid

import pytest
from sqlalchemy.engine import make_url

from app.broker.publish import Outgoing, publish
from app.core.logs import FIELDS
from app.intake.submit import submit
from app.store import db
from tests.conftest import DATABASE_URL, REDIS_URL
from tests.fixtures import sql, wait_for, wait_for_status

DB_PASSWORD = f"db-pw-{uuid.uuid4().hex[:8]}"
BROKER_PASSWORD = f"broker-pw-{uuid.uuid4().hex[:8]}"
LEAKED = f"leaked-{uuid.uuid4().hex[:8]}"


def _with_passwords() -> dict[str, str]:
    """The test's own services, reached with passwords they accept (local trust, Redis nopass)."""
    database_url = make_url(DATABASE_URL).set(password=DB_PASSWORD) \
        .render_as_string(hide_password=False)
    scheme, rest = REDIS_URL.split("://", 1)
    rest = rest.split("@", 1)[-1]
    return {"DATABASE_URL": database_url,
            "CELERY_BROKER_URL": f"{scheme}://default:{BROKER_PASSWORD}@{rest}"}


def submit_job(tenant: str, intent_key: str, **params) -> str:
    with db.session() as session:
        job_id = submit(session, tenant_id=tenant, intent_key=intent_key, intent_params=params)
        session.commit()
    return job_id


def json_lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


@pytest.mark.slow
def test_worker_logs_each_state_change_as_json_with_its_job_and_no_secret(
        tenant, start_worker_process):
    worker = start_worker_process(
        "-P", "prefork", "-c", "2", queues="realtime",
        env={"LOG_FORMAT": "json", **_with_passwords()})

    done = submit_job(tenant, "system.exec.echo", api_token=f"tok-{LEAKED}", note="ok")
    retried = submit_job(tenant, "system.exec.flaky", failures=1)
    with db.session() as session:
        failed = submit(session, tenant_id=tenant, intent_key="system.exec.flaky",
                        intent_params={"failures": 5}, max_retries=0)
        session.commit()
    # A row written by plain SQL is validated only when it runs: its bad value, a URL with a
    # password, ends up in the error message, the traceback and the log line.
    secret_url = f"postgresql://academy:{LEAKED}@db.internal/academy"
    bad = sql("INSERT INTO job_executions (tenant_id, intent_key, intent_params) "
              "VALUES (:t, 'system.exec.sleep', CAST(:p AS jsonb)) RETURNING id::text",
              t=tenant, p=json.dumps({"seconds": secret_url}))[0][0]
    publish([Outgoing(bad, tenant, "system.exec.sleep", "realtime")])
    for job_id, status in ((done, "completed"), (retried, "completed"), (failed, "failed"),
                           (bad, "failed")):
        wait_for_status(job_id, status)

    def lines_of(job_id: str) -> list[dict]:
        return [r for r in json_lines(worker.log())
                if r.get("job_id") == job_id and r["logger"] == "jobq.jobs"]

    wait_for(lambda: len(lines_of(bad)) >= 2, message="the worker's log lines")
    for job_id in (done, retried, failed, bad):
        for record in lines_of(job_id):
            assert set(FIELDS) <= set(record), record
            assert record["tenant_id"] == tenant
            assert record["intent_key"] in ("system.exec.echo", "system.exec.flaky",
                                            "system.exec.sleep")
    assert [(r["message"].split(" ")[1], r["attempt"]) for r in lines_of(done)] == [
        ("started", 1), ("completed", 1)]
    assert [(r["message"].split(" ")[1], r["attempt"]) for r in lines_of(retried)] == [
        ("started", 1), ("retry", 1), ("started", 2), ("completed", 2)]
    assert [(r["message"].split(" ")[1], r["level"]) for r in lines_of(failed)] == [
        ("started", "info"), ("failed", "error")]
    bad_failure = lines_of(bad)[-1]
    assert "invalid intent_params for 'system.exec.sleep'" in bad_failure["message"]
    assert "postgresql://academy:***@db.internal" in bad_failure["message"]

    everything = worker.log()
    for secret in (DB_PASSWORD, BROKER_PASSWORD, LEAKED):
        assert secret not in everything
    assert LEAKED not in str(sql("SELECT error_message FROM job_executions WHERE id = :j", j=bad))
    assert LEAKED not in str(sql("SELECT error, traceback FROM job_events WHERE job_id = :j",
                                 j=bad))
    # ... and the command line shows the row's parameters with the password masked as well.
    from tests.commands import jobq

    shown = jobq("job", bad)
    assert shown.returncode == 0 and LEAKED not in shown.stdout
    assert "postgresql://academy:***@db.internal/academy" in shown.stdout


