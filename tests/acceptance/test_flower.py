"""Flower as `jobq flower` starts it: a real Flower process against a real worker process, read
over HTTP with basic auth, refused without it, its state kept across a restart.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import uuid

import pytest
import requests

from app.broker.celery_app import celery_app
from app.intake import actions
from app.intake.submit import submit
from app.store import db
from tests.commands import JOBQ
from tests.fixtures import ROOT, job_row, make_tenant, sql, wait_for, wait_for_status
from tests.flower import (
    PASSWORD,
    USER,
    flower_task,
    submit_job,
    wait_for_worker_in,
)

pytestmark = pytest.mark.slow

def test_flower_refuses_to_listen_beyond_localhost_without_basic_auth():
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLOWER_")}
    for address in ("0.0.0.0", "", "flower.example.internal"):
        result = subprocess.run([*JOBQ, "flower", "--address", address, "--port", "1"],
                                env=env, capture_output=True, text=True, timeout=30, cwd=ROOT)
        assert result.returncode == 2, result.stderr
        assert "without a password: set FLOWER_BASIC_AUTH=user:password" in result.stderr

    run = subprocess.run([*JOBQ, "run"], env={**env, "FLOWER_ADDRESS": "0.0.0.0"},
                         capture_output=True, text=True, timeout=30, cwd=ROOT)
    assert run.returncode == 2
    assert "without a password" in run.stderr

    malformed = subprocess.run([*JOBQ, "flower", "--check", "--address", "0.0.0.0"],
                               env={**env, "FLOWER_BASIC_AUTH": "admin"},
                               capture_output=True, text=True, timeout=30, cwd=ROOT)
    assert malformed.returncode == 2
    assert "FLOWER_BASIC_AUTH must be user:password" in malformed.stderr

    allowed = subprocess.run([*JOBQ, "flower", "--check", "--address", "0.0.0.0"],
                             env={**env, "FLOWER_BASIC_AUTH": "admin:s3cret"},
                             capture_output=True, text=True, timeout=30, cwd=ROOT)
    assert allowed.returncode == 0, allowed.stderr
    local = subprocess.run([*JOBQ, "flower", "--check"], env=env, capture_output=True,
                           text=True, timeout=30, cwd=ROOT)
    assert local.returncode == 0 and "this machine only" in local.stdout


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


def test_a_flower_for_this_machine_only_serves_its_api_without_a_password(
        tenant, start_worker_process, start_flower):
    worker = start_worker_process("-P", "solo", queues="celery,dispatch,realtime,maintenance")
    flower = start_flower(env={"FLOWER_BASIC_AUTH": ""})  # 127.0.0.1, no credentials set
    wait_for_worker_in(flower, worker.name, auth=None)

    echo = submit_job(tenant, "system.exec.echo", hello="world")
    wait_for_status(echo, "completed")
    task = wait_for(lambda: flower.get("/api/tasks", auth=None).json().get(echo), 30,
                    interval=0.3, message="Flower to list the job")
    assert task["name"] == "system.exec.echo" and task["state"] in ("RECEIVED", "STARTED",
                                                                     "SUCCESS")
    assert flower.get("/api/workers", auth=None).status_code == 200


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
