"""Secrets stay secret: the database and broker passwords, a password in a URL a handler uses,
and parameters marked secret (``Intent.secret_params``, or secret by their name) never show in
log lines, ``job_events``, ``error_message``, Flower, or the audit views of the command line.

A real prefork worker and a real Flower run with passwords in their service URLs.
"""

from __future__ import annotations

import json
import random
import uuid

import pytest

from app import dispatch_intent, job_id_for
from app.core.errors import IntentRefused
from app.ops.embedded import free_port
from tests.acceptance.test_logs import BROKER_PASSWORD, DB_PASSWORD, _with_passwords
from tests.commands import jobq
from tests.fixtures import job_events, job_row, wait_for, wait_for_status
from tests.flower import wait_for_worker_in

LEAKED = f"url-pw-{uuid.uuid4().hex[:8]}"
CARD = f"4111-{random.randrange(10**11, 10**12)}"
CARD_DIGITS = random.randrange(10**15, 10**16)
TOKEN = f"tok-{uuid.uuid4().hex[:12]}"
SECRETS = (DB_PASSWORD, BROKER_PASSWORD, LEAKED, CARD, str(CARD_DIGITS), TOKEN)


def assert_no_secret(where: str, text: str) -> None:
    for secret in SECRETS:
        assert secret not in text, f"{secret!r} shows in {where}"






@pytest.mark.slow
def test_secrets_never_reach_logs_events_errors_flower_or_the_audit_views(
        tenant, start_worker_process, start_flower):
    services = _with_passwords()
    worker = start_worker_process("-P", "prefork", "-c", "2",
                                  queues="celery,dispatch,realtime", env=services)
    flower = start_flower(env=services)
    wait_for_worker_in(flower, worker.name)

    # A handler that logs a URL with a password, fails to connect to it and fails naming it.
    unreachable = f"postgresql://reporter:{LEAKED}@127.0.0.1:{free_port()}/reports"
    leak = dispatch_intent.delay(tenant_id=tenant, intent_key="test.exec.connect_with_password",
                                 intent_params={"url": unreachable})
    # Declared and secret-looking parameters: dispatched positionally and by name, echoed back
    # in the result, and held by a statement that fails.
    secrets = {"card_number": CARD, "api_token": TOKEN, "note": "3월 수강료"}
    echoed = dispatch_intent.delay(tenant, "test.exec.use_secrets", secrets)
    failing = dispatch_intent.delay(tenant_id=tenant, intent_key="test.exec.use_secrets",
                                    intent_params={**secrets, "fail": True})
    # A secret's bad value is named as wrong, never shown.
    refused = dispatch_intent.delay(tenant_id=tenant, intent_key="test.exec.use_secrets",
                                    intent_params={"card_number": CARD_DIGITS, "api_token": TOKEN})
    with pytest.raises(IntentRefused) as refusal:
        refused.get(timeout=15)
    assert "card_number: Input should be a valid string (value hidden: a secret)" \
        in str(refusal.value)

    leak_id, echoed_id, failing_id = (r.get(timeout=15) for r in (leak, echoed, failing))
    leak_row = wait_for_status(leak_id, "failed")
    assert wait_for_status(echoed_id, "completed")["result"]["card_number"] == CARD  # stored
    failing_row = wait_for_status(failing_id, "failed")

    # error_message and the events, where the password and the secrets would have landed.
    assert leak_row["error_message"].startswith(
        "PermanentError: reporting database postgresql://reporter:***@127.0.0.1:")
    assert "division by zero" in failing_row["error_message"]
    assert "SQL parameters hidden" in failing_row["error_message"]
    for job_id in (leak_id, echoed_id, failing_id, job_id_for(refused.id)):
        row = job_row(job_id)
        assert_no_secret(f"error_message of {job_id}", str(row["error_message"]))
        assert_no_secret(f"job_events of {job_id}", json.dumps(job_events(job_id), default=str))
    refused_row = job_row(job_id_for(refused.id))
    assert refused_row["status"] == "failed"
    assert refused_row["error_message"] == str(refusal.value)
    assert_no_secret("the refusal's events", json.dumps(job_events(refused_row["id"]),
                                                        default=str))

    # The worker's log: its own service URLs, the handler's log line, the failures.
    wait_for(lambda: "connecting to the reporting database at postgresql://reporter:***@"
             in worker.log(), message="the handler's log line")
    assert_no_secret("the worker's log", worker.log())

    # Flower: every task it heard of, dispatches included, and the worker's own description.
    def flower_knows_all():
        tasks = flower.get("/api/tasks").json()
        ids = {leak.id, echoed.id, failing.id, refused.id, leak_id, echoed_id, failing_id}
        return tasks if ids <= set(tasks) else None

    tasks = wait_for(flower_knows_all, 30, interval=0.3, message="Flower to hear of every task")
    assert "3월 수강료" in tasks[echoed.id]["args"] and "***" in tasks[echoed.id]["args"]
    assert "***" in tasks[failing.id]["kwargs"] and "***" in tasks[leak.id]["kwargs"]
    pages = [json.dumps(tasks, ensure_ascii=False)]
    pages += [flower.get(f"/api/task/info/{task_id}").text for task_id in tasks]
    pages += [flower.get(path).text for path in ("/api/workers", "/api/queues/length",
                                                  "/broker", f"/worker/{worker.name}")]
    for task in tasks.values():
        for field, value in task.items():
            assert_no_secret(f"Flower's {field} of {task['name']}", str(value))
    for page in pages:
        assert_no_secret("Flower", page)
    assert_no_secret("Flower's log", flower.log())

    # The audit views: jobq job (text, --json, --traceback) and jobq jobs --json.
    for args in (["job", echoed_id], ["job", echoed_id, "--json"], ["job", failing_id,
                 "--traceback"], ["job", leak_id, "--json"], ["jobs", "-t", tenant, "--json"]):
        shown = jobq(*args, env=services)
        assert shown.returncode == 0, shown.stderr
        assert_no_secret(f"jobq {' '.join(args)}", shown.stdout + shown.stderr)
    shown = json.loads(jobq("job", echoed_id, "--json").stdout)["job"]
    assert shown["intent_params"] == {"card_number": "***", "api_token": "***",
                                      "note": "3월 수강료", "fail": False}
    assert shown["result"] == shown["intent_params"]
