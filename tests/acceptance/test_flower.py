"""Flower as `jobq flower` starts it: a real Flower process against a real worker process, read
over HTTP, always behind a password (generated when none is set, a weak one refused), closed to
cross-site requests, showing a running job from its receipt, its state kept across a restart.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import stat
import subprocess
import uuid

import pytest
import requests

from app.broker.celery_app import celery_app
from app.intake import actions
from app.intake.submit import submit
from app.ops.embedded import free_port
from app.store import db
from tests.commands import JOBQ
from tests.fixtures import (
    ROOT,
    job_row,
    make_tenant,
    queued_job_ids,
    sql,
    wait_for,
    wait_for_status,
)
from tests.flower import (
    PASSWORD,
    USER,
    flower_task,
    submit_job,
    wait_for_worker_in,
)

pytestmark = pytest.mark.slow


@pytest.mark.parametrize(("basic_auth", "says"), [
    ("admin:change-me", "is a known default ('change-me')"),  # what docker-compose once shipped
    ("admin", "must be user:password"),
])
def test_a_weak_or_malformed_flower_password_is_refused_at_start(basic_auth, says, tmp_path):
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("FLOWER_")},
           "JOBQ_HOME": str(tmp_path / "home"), "FLOWER_BASIC_AUTH": basic_auth}
    for command in (["flower", "--port", str(free_port())], ["run", "--no-api"]):
        result = subprocess.run([*JOBQ, *command], env={**env, "FLOWER_PORT": str(free_port())},
                                capture_output=True, text=True, timeout=60, cwd=ROOT)
        assert result.returncode == 2, (command, result.stdout, result.stderr)
        assert "FLOWER_BASIC_AUTH refused" in result.stderr and says in result.stderr, \
            result.stderr
        assert "embedded" not in result.stdout  # refused before anything started
    assert not (tmp_path / "home" / "flower-credentials").exists()


def test_without_flower_basic_auth_credentials_are_generated_once_kept_private_and_required(
        start_flower, tmp_path):
    # FLOWER_UNAUTHENTICATED_API, which opened Flower's API before, opens nothing.
    flower = start_flower(env={"FLOWER_BASIC_AUTH": "", "FLOWER_UNAUTHENTICATED_API": "true"})
    kept = tmp_path / "home" / "flower-credentials"
    assert stat.S_IMODE(kept.stat().st_mode) == 0o600
    user, _, password = kept.read_text().strip().partition(":")
    assert user == "operator" and len(password) >= 24
    assert f"(user operator, password {password}; generated once and kept in {kept}" \
        in flower.log()
    assert flower.get("/api/workers", auth=None).status_code == 401
    assert flower.get("/workers", auth=None).status_code == 401
    assert flower.get("/api/workers", auth=(user, "wrong")).status_code == 401
    assert flower.get("/api/workers", auth=(user, password)).status_code == 200
    assert flower.get("/workers", auth=(user, password)).status_code == 200
    assert flower.get("/healthcheck", auth=None).status_code == 200

    # A restart keeps them, and prints where they are, not the password again.
    assert flower.stop() == 0
    again = start_flower(env={"FLOWER_BASIC_AUTH": ""})
    assert kept.read_text().strip() == f"{user}:{password}"
    assert f"(user operator; its password: cat {kept})" in again.log()
    assert password not in again.log()
    assert again.get("/api/workers", auth=(user, password)).status_code == 200
    assert again.get("/api/workers", auth=None).status_code == 401

    # Opened up by hand, the file is made private again before Flower starts.
    assert again.stop() == 0
    kept.chmod(0o644)
    third = start_flower(env={"FLOWER_BASIC_AUTH": ""})
    assert stat.S_IMODE(kept.stat().st_mode) == 0o600
    assert third.get("/api/workers", auth=(user, password)).status_code == 200


def test_a_cross_site_post_runs_and_cancels_nothing_even_with_the_password(
        tenant, start_worker_process, start_flower, tmp_path):
    """As `jobq run` starts it (no FLOWER_BASIC_AUTH): a POST without the password, and what a
    web page in the operator's browser could send with the password the browser remembers (a
    text/plain POST, no CORS pre-flight, from another origin). Flower refuses before it
    publishes anything: the broker's queue stays empty, the waiting row stays pending."""
    flower = start_flower(env={"FLOWER_BASIC_AUTH": ""})
    login = tuple((tmp_path / "home" / "flower-credentials").read_text().strip().split(":", 1))
    with db.session() as session:  # an academy's job, waiting in the table for tomorrow
        waiting = submit(session, tenant_id=tenant, intent_key="system.exec.echo",
                         intent_params={"n": 1}, run_at=dt.datetime.now(dt.UTC) + dt.timedelta(days=1))
        session.commit()
    stranger = json.dumps({"kwargs": {"tenant_id": tenant, "intent_key": "system.exec.echo",
                                      "intent_params": {"by": "stranger"}}})
    cancel = json.dumps({"kwargs": {"job_id": waiting}})
    page = {"Content-Type": "text/plain"}
    attempts = [
        # No credentials at all (from another site, refused as such before the password).
        (None, page, 401),
        (None, {**page, "Origin": "https://evil.example"}, 403),
        # The browser's remembered password, sent from another site.
        (login, {**page, "Origin": "https://evil.example"}, 403),
        (login, {**page, "Origin": "https://evil.example",
                            "Sec-Fetch-Site": "cross-site"}, 403),
        (login, {**page, "Sec-Fetch-Site": "cross-site"}, 403),
        (login, {**page, "Sec-Fetch-Site": "same-site",  # another port, same host
                            "Origin": "http://127.0.0.1:8000"}, 403),
        (login, {**page, "Origin": "null"}, 403),  # a sandboxed frame, a data: URL
    ]
    for auth, headers, status in attempts:
        for path, body in (("/api/task/async-apply/dispatch_intent", stranger),
                           ("/api/task/async-apply/jobq.cancel_job", cancel),
                           ("/api/task/send-task/dispatch_intent", stranger),
                           (f"/api/task/revoke/{waiting}?terminate=true", None)):
            response = requests.post(flower.url + path, data=body, headers=headers, auth=auth,
                                     timeout=5)
            assert response.status_code == status, (path, headers, response.text[:200])
            assert queued_job_ids("dispatch") == [], (path, headers)  # nothing was published
    assert job_row(waiting)["status"] == "pending"

    # The same POST from Flower's own pages (same origin) with the password works.
    own = {**page, "Origin": flower.url, "Sec-Fetch-Site": "same-origin"}
    response = requests.post(f"{flower.url}/api/task/async-apply/dispatch_intent",
                             data=stranger.replace("stranger", "operator"), headers=own,
                             auth=login, timeout=5)
    assert response.status_code == 200, response.text
    assert queued_job_ids("dispatch") == [response.json()["task-id"]]
    start_worker_process("-P", "solo", queues="celery,dispatch,realtime")
    wait_for(lambda: sql("SELECT status FROM job_executions WHERE tenant_id = :t AND "
                         "intent_params->>'by' = 'operator'", t=tenant) == [("completed",)],
             30, interval=0.2, message="the operator's job to complete")
    # The stranger's never came, and the waiting job was never cancelled.
    assert sql("SELECT count(*) FROM job_executions WHERE tenant_id = :t "
               "AND intent_params->>'by' = 'stranger'", t=tenant) == [(0,)]
    assert job_row(waiting)["status"] == "pending"


@pytest.mark.smoke
def test_flower_shows_each_intent_under_its_key_only_with_credentials(
        tenant, start_worker_process, start_flower):
    worker = start_worker_process("-P", "prefork", "-c", "2",
                                  queues="celery,dispatch,realtime,bulk,maintenance")
    flower = start_flower()
    wait_for_worker_in(flower, worker.name)

    echo = submit_job(tenant, "system.exec.echo", greeting="안녕하세요", password="hunter2")
    flaky = submit_job(tenant, "system.exec.flaky", failures=1)
    with db.session() as session:
        doomed = submit(session, tenant_id=tenant, intent_key="system.exec.flaky",
                        intent_params={"failures": 3}, max_retries=1)
        session.commit()
    wait_for_status(echo, "completed")
    wait_for_status(flaky, "completed")
    wait_for_status(doomed, "failed")

    def listed():
        tasks = flower.get("/api/tasks").json()
        return tasks if echo in tasks and tasks.get(flaky, {}).get("state") == "SUCCESS" else None

    tasks = wait_for(listed, 30, interval=0.3, message="Flower to list both jobs")
    assert tasks[echo]["name"] == "system.exec.echo"
    assert tasks[echo]["state"] == "SUCCESS"
    assert tasks[echo]["worker"] == worker.name
    assert tasks[flaky]["name"] == "system.exec.flaky"
    # Flower's kwargs come from the message's kwargsrepr: tenant and parameters, secrets hidden.
    assert tenant in tasks[echo]["kwargs"] and "안녕하세요" in tasks[echo]["kwargs"]
    assert "hunter2" not in tasks[echo]["kwargs"] and "***" in tasks[echo]["kwargs"]
    # A job that failed for good is a FAILURE in Flower too, with the reason of its last
    # attempt; the attempt before it was a RETRY, not a SUCCESS a later event cannot undo.
    failure = flower_task(flower, doomed, state="FAILURE")
    assert "TransientError: flaky: planned failure 2 of 3" in failure["exception"]
    assert failure["retried"] is not None
    types = flower.get("/api/task/types").json()["task-types"]
    assert {"system.exec.echo", "system.exec.flaky"} <= set(types)
    only_echo = flower.get("/api/tasks", params={"taskname": "system.exec.echo"}).json()
    assert echo in only_echo and flaky not in only_echo

    assert flower.get("/api/tasks", auth=None).status_code == 401
    assert flower.get("/api/tasks", auth=(USER, "wrong")).status_code == 401
    assert flower.get("/tasks", auth=None).status_code == 401
    assert PASSWORD not in flower.log()


def test_an_exposed_flower_refuses_every_unauthenticated_read_and_action(
        tenant, start_worker_process, start_flower):
    """On every interface, Flower answers nothing and does nothing without the password, even
    with FLOWER_UNAUTHENTICATED_API set; with it, the same calls work (so the 401s mean it)."""
    worker = start_worker_process("-P", "prefork", "-c", "2",
                                  queues="celery,dispatch,realtime,bulk,maintenance")
    flower = start_flower("--address", "0.0.0.0", env={"FLOWER_UNAUTHENTICATED_API": "true"})
    wait_for_worker_in(flower, worker.name)
    job_id = submit_job(tenant, "system.exec.echo", n=1)
    flower_task(flower, job_id, state="SUCCESS")
    name = worker.name
    apply = {"kwargs": {"tenant_id": tenant, "intent_params": {"by": "stranger"}}}
    reads = ["/", "/workers", f"/worker/{name}", "/tasks", "/tasks/datatable", f"/task/{job_id}",
             "/broker", "/api/workers", "/api/tasks", "/api/task/types", "/api/queues/length",
             f"/api/task/info/{job_id}", f"/api/task/result/{job_id}"]
    actions = [
        ("/api/task/async-apply/system.exec.echo", apply),
        ("/api/task/send-task/system.exec.echo", apply),
        ("/api/task/apply/system.exec.echo", apply),
        (f"/api/task/revoke/{job_id}?terminate=true", None),
        (f"/api/task/abort/{job_id}", None),
        (f"/api/task/rate-limit/system.exec.echo?workername={name}&ratelimit=1/h", None),
        (f"/api/task/timeout/system.exec.echo?workername={name}&hard=1", None),
        (f"/api/worker/pool/shrink/{name}?n=1", None),
        (f"/api/worker/pool/autoscale/{name}?min=0&max=0", None),
        (f"/api/worker/queue/cancel-consumer/{name}?queue=realtime", None),
        (f"/api/worker/pool/restart/{name}", None),
        (f"/api/worker/shutdown/{name}", None),
    ]
    for auth in (None, (USER, "wrong"), ("intruder", PASSWORD)):
        for path in reads:
            assert flower.get(path, auth=auth).status_code == 401, (path, auth)
        for path, body in actions:
            response = requests.post(flower.url + path, json=body, auth=auth, timeout=5)
            assert response.status_code == 401, (path, auth, response.text[:200])

    # Nothing happened: no job from the stranger, and the worker, its pool and its queues serve.
    assert celery_app.control.ping(destination=[name], timeout=2)
    assert sql("SELECT count(*) FROM job_executions WHERE tenant_id = :t "
               "AND intent_params->>'by' = 'stranger'", t=tenant) == [(0,)]
    wait_for_status(submit_job(tenant, "system.exec.echo", after="refusals"), "completed")
    # The same call with the password does run a job.
    response = requests.post(f"{flower.url}/api/task/async-apply/system.exec.echo",
                             json={"kwargs": {"tenant_id": tenant,
                                              "intent_params": {"by": "operator"}}},
                             auth=(USER, PASSWORD), timeout=5)
    assert response.status_code == 200, response.text
    row = wait_for_status(response.json()["task-id"], "completed")
    assert row["source"] == "direct" and row["result"] == {"by": "operator"}
    # Open by design, for Prometheus and health checks: counts only, no task's arguments.
    metrics = flower.get("/metrics", auth=None)
    assert metrics.status_code == 200 and tenant not in metrics.text
    assert flower.get("/healthcheck", auth=None).status_code == 200


def test_progress_shows_in_flower_while_a_job_runs(tenant, start_worker_process, start_flower):
    worker = start_worker_process("-P", "prefork", "-c", "1", queues="realtime")
    flower = start_flower()
    wait_for_worker_in(flower, worker.name)

    job_id = submit_job(tenant, "system.exec.sleep", seconds=3)
    running = flower_task(flower, job_id, state="PROGRESS")
    assert re.fullmatch(r"\d+% \(\d+(\.\d)?/3\)", running["result"]), running["result"]
    assert running["name"] == "system.exec.sleep"

    done = flower_task(flower, job_id, state="SUCCESS")
    assert done["result"] == "{'slept': 3.0}"
    assert done["runtime"] >= 3.0


@pytest.mark.parametrize("pool", [["-P", "solo"], ["-P", "prefork", "-c", "1"]],
                         ids=["solo", "prefork"])
def test_a_running_job_shows_in_flower_with_its_name_academy_and_start(
        pool, start_worker_process, start_flower):
    """From its receipt, not from its end: on `jobq run`'s solo workers too, whose one thread
    runs the job where it would otherwise send the worker's buffered task events."""
    academy = f"플라워 학원 {uuid.uuid4().hex[:6]}"
    tenant = make_tenant(academy)
    worker = start_worker_process(*pool, queues="realtime")
    flower = start_flower()
    wait_for_worker_in(flower, worker.name)

    job_id = submit_job(tenant, "system.exec.sleep", seconds=60)
    wait_for_status(job_id, "processing")

    def shown_running():
        task = flower.get("/api/tasks").json().get(job_id)
        return task if task and task.get("name") and task.get("started") else None

    task = wait_for(shown_running, 30, interval=0.2, message="Flower to show the running job")
    assert job_row(job_id)["status"] == "processing"  # seen while it runs, not after
    assert task["name"] == "system.exec.sleep"
    assert task["worker"] == worker.name
    assert task["received"] <= task["started"]
    assert academy in task["kwargs"] and tenant in task["kwargs"]
    assert task["state"] in ("STARTED", "PROGRESS")

    assert actions.cancel(job_id, by="test") == "processing"
    wait_for_status(job_id, "cancelled")


def test_metrics_for_prometheus_and_state_kept_across_a_restart(
        tenant, start_worker_process, start_flower):
    worker = start_worker_process("-P", "prefork", "-c", "1", queues="realtime")
    flower = start_flower()
    wait_for_worker_in(flower, worker.name)
    job_id = submit_job(tenant, "system.exec.echo", n=1)
    flower_task(flower, job_id, state="SUCCESS")

    metrics = flower.get("/metrics", auth=None)
    assert metrics.status_code == 200
    assert re.search(r'flower_events_total\{[^}]*task="system\.exec\.echo"[^}]*type="task-succeeded"',
                     metrics.text)
    assert re.search(r'flower_task_runtime_seconds_count\{[^}]*task="system\.exec\.echo"',
                     metrics.text)

    assert flower.stop() == 0
    worker.stop()
    again = start_flower()  # same data folder, no worker: only the saved state can know the job
    task = again.get(f"/api/task/info/{job_id}").json()
    assert task["state"] == "SUCCESS" and task["name"] == "system.exec.echo"


def test_beats_caretaking_stays_out_of_flower_and_shows_in_jobq_stats(
        tenant, start_worker_process, start_beat_process, start_flower):
    worker = start_worker_process("-P", "solo", queues="celery,dispatch,realtime,maintenance")
    flower = start_flower()
    wait_for_worker_in(flower, worker.name)
    start_beat_process()  # the sweep and recovery tick every 0.5 s in the tests

    def caretaking():
        out = subprocess.run([*JOBQ, "stats", "--json"], env=os.environ, capture_output=True,
                             text=True, timeout=60, cwd=ROOT)
        assert out.returncode == 0, out.stderr
        notes = json.loads(out.stdout)["caretaking"] or {}
        return notes if notes.get("sweep_due_jobs", {}).get("runs", 0) >= 6 else None

    notes = wait_for(caretaking, 60, interval=0.5, message="beat's sweep to run six times")
    assert notes["recover_lost_runs"]["runs"] >= 1
    job_id = submit_job(tenant, "system.exec.echo", after="caretaking")
    flower_task(flower, job_id, state="SUCCESS")

    # Flower heard the job, and nothing of the dozen caretaking runs meanwhile.
    tasks = flower.get("/api/tasks").json()
    assert job_id in tasks
    assert [t["name"] for t in tasks.values() if t["name"].startswith("jobq.")] == []
    types = flower.get("/api/task/types").json()["task-types"]
    assert "system.exec.echo" in types and not [t for t in types if t.startswith("jobq.")]
    shown = subprocess.run([*JOBQ, "stats"], env={**os.environ, "COLUMNS": "120"},
                           capture_output=True, text=True, timeout=60, cwd=ROOT).stdout
    assert re.search(r"sweep_due_jobs\s+last ran \d+ ms ago, \d+ runs", shown), shown
