"""The dispatch pump (app.intake.pump) on real Redis and PostgreSQL: ``dispatch_intent``
requests taken from the ``dispatch`` queue a batch at a time become the same rows, the same
refusals and the same results as the task makes of them one by one.

No worker consumes ``dispatch`` here, so whatever became a row, the pump made it. Where a test
compares with the task, it runs the task's own body on the same request (``apply``).
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator

import pytest
from celery.result import AsyncResult

from app.broker import dispatch_queue
from app.broker.celery_app import celery_app
from app.core.errors import IdempotencyConflict, IntentRefused, TenantRefused
from app.core.settings import settings
from app.core.validation import job_id_for
from app.intake import pump
from app.tasks.dispatch import dispatch_intent
from tests.fixtures import event_kinds, job_row, make_tenant, sql, wait_for

ECHO = "system.exec.echo"


class Running:
    """A pump thread of the test's own, as beat runs it."""

    def __init__(self) -> None:
        self.thread = pump.Pump()

    def start(self) -> Running:
        self.thread.start()
        wait_for(lambda: self.thread.leading, 10, message="the pump to lead")
        return self

    def stop(self) -> None:
        self.thread.stop()


@pytest.fixture
def start_pump() -> Iterator[Callable[[], Running]]:
    started: list[Running] = []

    def start() -> Running:
        running = Running().start()
        started.append(running)
        return running

    yield start
    for running in started:
        running.stop()


def held() -> int:
    broker = dispatch_queue.Held()
    return len(broker.held_tags())


def queued() -> int:
    from app.broker import client

    return client.client().llen(settings.redis_key_prefix + "dispatch")


def send(**kwargs) -> AsyncResult:
    return dispatch_intent.delay(**kwargs)


def outcome(result: AsyncResult, timeout: float = 15) -> str | IntentRefused:
    try:
        return result.get(timeout=timeout)
    except IntentRefused as exc:
        return exc


# --- rows and results ---------------------------------------------------------------------------


def test_a_batch_of_requests_becomes_one_row_each_with_its_result(start_pump, tenant):
    results = [send(tenant_id=tenant, intent_key=ECHO, intent_params={"n": i}) for i in range(40)]
    assert queued() == 40  # nobody has taken them yet
    running = start_pump()

    ids = [r.get(timeout=15) for r in results]
    assert ids == [job_id_for(r.id) for r in results]
    rows = sql("SELECT id::text, source, status, intent_params FROM job_executions "
               "WHERE tenant_id = CAST(:t AS uuid)", t=tenant)
    assert len(rows) == 40 and {r[0] for r in rows} == set(ids)
    assert {r[1] for r in rows} == {"dispatch"}
    assert sorted(r[3]["n"] for r in rows) == list(range(40))
    assert event_kinds(ids[0])[0] == (0, "created")
    assert running.thread.pumped == 40
    assert queued() == 0 and held() == 0  # every message acknowledged


BAD_REQUESTS = [
    pytest.param({"intent_key": "system.exec.ecco", "intent_params": {"a": 1}}, id="unknown-intent"),
    pytest.param({"intent_key": "system.exec.sleep",
                  "intent_params": {"seconds": "soon", "colour": "red"}}, id="invalid-params"),
    pytest.param({"intent_key": "system.exec.sleep", "intent_params": {}}, id="missing-param"),
    pytest.param({"intent_key": ECHO, "intent_params": {"blob": "x" * 70_000}}, id="too-big"),
    pytest.param({"intent_key": ECHO, "run_at": "tomorrow"}, id="bad-run-at"),
    pytest.param({"intent_key": ECHO, "max_retries": 99}, id="bad-max-retries"),
    pytest.param({"intent_key": ECHO, "idempotency_key": ""}, id="bad-idempotency-key"),
    pytest.param({"intent_key": ECHO, "colour": "red"}, id="unknown-argument"),
    pytest.param({"tenant_id": "academy-7", "intent_key": ECHO}, id="malformed-tenant"),
    pytest.param({"tenant_id": "unknown", "intent_key": ECHO}, id="unknown-tenant"),
    pytest.param({"tenant_id": "unknown", "intent_key": ECHO, "colour": 1},
                 id="unknown-tenant-and-argument"),
    pytest.param({"tenant_id": "suspended", "intent_key": ECHO}, id="suspended-tenant"),
]


def _rows(tenant: str) -> list[tuple]:
    return [tuple(r) for r in sql(
        "SELECT status, intent_key, error_message, intent_params, max_retries, source "
        "FROM job_executions WHERE tenant_id = CAST(:t AS uuid) ORDER BY created_at", t=tenant)]


@pytest.mark.parametrize("request_", BAD_REQUESTS)
def test_a_bad_request_is_refused_as_the_task_refuses_it(start_pump, request_):
    """The same exception, message and field, and the same audit row (or none), as the task's
    own body gives the same request: compared side by side."""
    def tenant_for(path: str) -> str:
        kind = request_.get("tenant_id")
        if kind == "unknown":
            return str(uuid.uuid4())
        if kind == "suspended":
            return make_tenant(status="suspended")
        return kind or make_tenant(f"{path} 학원")

    by_task = {**request_, "tenant_id": tenant_for("task")}
    by_pump = {**request_, "tenant_id": tenant_for("pump")}
    expected = dispatch_intent.apply(kwargs=by_task)
    assert expected.failed()
    result = send(**by_pump)
    start_pump()
    got = outcome(result)

    want = expected.result
    assert type(got) is type(want)
    assert str(got).replace(by_pump["tenant_id"], "T") == str(want).replace(by_task["tenant_id"], "T")
    # (The field and job id do not travel through Celery's JSON results, from a worker either.)
    assert result.state == "FAILURE"
    if by_task["tenant_id"] != "academy-7":
        assert _rows(by_pump["tenant_id"]) == _rows(by_task["tenant_id"])


def test_refusals_and_good_requests_in_one_batch_each_get_their_own_outcome(start_pump, tenant):
    stranger, suspended = str(uuid.uuid4()), make_tenant(status="suspended")
    calls = [
        send(tenant_id=tenant, intent_key=ECHO, intent_params={"i": 1}),
        send(tenant_id=stranger, intent_key=ECHO),
        send(tenant_id=tenant, intent_key="system.exec.ecco"),
        send(tenant_id=suspended, intent_key=ECHO),
        send(tenant_id="academy-7", intent_key=ECHO),
        send(tenant_id=tenant, intent_key=ECHO, intent_params={"i": 2}),
    ]
    running = start_pump()
    got = [outcome(r) for r in calls]

    assert got[0] == job_id_for(calls[0].id) and got[5] == job_id_for(calls[5].id)
    assert isinstance(got[1], TenantRefused) and f"unknown tenant {stranger}" in str(got[1])
    assert isinstance(got[2], IntentRefused) and "unknown intent key" in str(got[2])
    assert isinstance(got[3], TenantRefused) and "is suspended" in str(got[3])
    assert isinstance(got[4], TenantRefused) and "'academy-7' is not a UUID" in str(got[4])
    assert sorted(r[0] for r in _rows(tenant)) == ["failed", "pending", "pending"]
    assert _rows(stranger) == [] and _rows(suspended) == []
    assert running.thread.pumped == 6


def test_idempotency_keys_hold_within_a_batch_and_across_batches(start_pump, tenant):
    first = send(tenant_id=tenant, intent_key=ECHO, intent_params={"a": 1}, idempotency_key="k1")
    again = send(tenant_id=tenant, intent_key=ECHO, intent_params={"a": 1}, idempotency_key="k1")
    other = send(tenant_id=tenant, intent_key=ECHO, intent_params={"a": 2}, idempotency_key="k1")
    start_pump()  # all three in one batch

    job = first.get(timeout=15)
    assert again.get(timeout=15) == job
    with pytest.raises(IdempotencyConflict):
        other.get(timeout=15)
    later = send(tenant_id=tenant, intent_key=ECHO, intent_params={"a": 1}, idempotency_key="k1")
    assert later.get(timeout=15) == job  # another batch
    assert sql("SELECT count(*) FROM job_executions WHERE tenant_id = CAST(:t AS uuid)",
               t=tenant) == [(1,)]


def test_an_intent_that_needs_approval_waits_for_it(start_pump, tenant):
    result = send(tenant_id=tenant, intent_key="test.exec.approved_echo", intent_params={"x": 1})
    start_pump()
    job = result.get(timeout=15)
    assert job_row(job)["status"] == "awaiting_approval"


# --- a pump that dies ---------------------------------------------------------------------------


def test_a_batch_taken_by_a_pump_that_died_comes_back_and_becomes_rows_once(start_pump, tenant):
    results = [send(tenant_id=tenant, intent_key=ECHO, intent_params={"n": i}) for i in range(30)]
    # A pump takes 20 and dies before writing them; another one dies after writing 10 of its
    # own (rows committed), before acknowledging them.
    dead = dispatch_queue.Held()
    assert len(dead.take(20)) == 20
    written = [pump.decode(raw) for raw in dead.take(5)]
    pump.write_batch(written)
    assert queued() == 5 and held() == 25
    assert sql("SELECT count(*) FROM job_executions WHERE tenant_id = CAST(:t AS uuid)",
               t=tenant) == [(5,)]

    start_pump()  # the next pump to lead gives the 25 back and takes all 30
    ids = [r.get(timeout=15) for r in results]
    assert ids == [job_id_for(r.id) for r in results]
    assert sql("SELECT count(*), count(DISTINCT id) FROM job_executions "
               "WHERE tenant_id = CAST(:t AS uuid)", t=tenant) == [(30, 30)]
    wait_for(lambda: held() == 0 and queued() == 0, 5, message="every message acknowledged")
    for job in ids[20:25]:  # written twice, one row and one 'created' event
        assert [k for _, k in event_kinds(job)].count("created") == 1


def test_a_killed_pump_process_loses_nothing(tmp_path, tenant):
    """A real process pumping a burst is SIGKILLed (mid-batch or between two); a second pump
    finishes: every request is exactly one row and every caller gets its job id."""
    import os
    import signal
    import subprocess
    import sys

    n = 1500
    with celery_app.producer_or_acquire() as producer:
        results = [dispatch_intent.apply_async(
            kwargs={"tenant_id": tenant, "intent_key": ECHO, "intent_params": {"n": i}},
            producer=producer) for i in range(n)]
    code = ("import app.tasks, time\nfrom app.intake import pump\np = pump.start()\n"
            "while True: time.sleep(1)\n")
    with open(tmp_path / "pump.log", "wb") as log:
        proc = subprocess.Popen([sys.executable, "-c", code], stdout=log, stderr=subprocess.STDOUT,
                                env={**os.environ, "JOBQ_DISPATCH_BATCH": "100"})
    try:
        wait_for(lambda: sql("SELECT count(*) FROM job_executions WHERE tenant_id = "
                             "CAST(:t AS uuid)", t=tenant)[0][0] >= 200, 60,
                 interval=0.005, message="the pump to have written some rows")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    was_held, left = held(), queued()
    assert left > 0, "the pump finished before it was killed: nothing tested"

    second = Running().start()
    try:
        ids = [r.get(timeout=60) for r in results]
    finally:
        second.stop()
    assert ids == [job_id_for(r.id) for r in results]
    assert sql("SELECT count(*), count(DISTINCT id) FROM job_executions "
               "WHERE tenant_id = CAST(:t AS uuid)", t=tenant) == [(n, n)]
    print(f"killed with {was_held} held and {left} queued; all {n} became one row each")


# --- what the pump leaves to workers ------------------------------------------------------------


def test_messages_the_pump_does_not_run_stay_for_workers(start_pump, tenant):
    later = dispatch_intent.apply_async(kwargs={"tenant_id": tenant, "intent_key": ECHO},
                                        countdown=30)
    behind = send(tenant_id=tenant, intent_key=ECHO)
    running = start_pump()
    time.sleep(0.5)
    # The countdown message is at the front: the pump stops there, a worker's to take.
    assert running.thread.pumped == 0 and queued() == 2 and held() == 0
    assert later.state == behind.state == "PENDING"


def test_the_pump_leaves_nothing_held_when_stopped(start_pump, tenant):
    running = start_pump()
    stop_sending = threading.Event()

    def keep_sending():
        while not stop_sending.is_set():
            send(tenant_id=tenant, intent_key=ECHO)

    sender = threading.Thread(target=keep_sending)
    sender.start()
    time.sleep(1.0)
    running.stop()
    stop_sending.set()
    sender.join()
    assert held() == 0
    assert not running.thread.leading


def test_a_malformed_message_goes_to_a_worker_marked_and_the_pump_moves_on(
        start_pump, tenant, start_worker_process):
    """The pump hands what it cannot run (here a body that is not [args, kwargs, embed]) to
    the back of the queue, marked for workers; a worker discards it as it always has."""
    import base64
    import json

    from app.broker import client

    redis = client.client()
    key = settings.redis_key_prefix + "dispatch"
    good_before = send(tenant_id=tenant, intent_key=ECHO)
    [raw] = redis.lrange(key, 0, -1)
    bad = json.loads(raw)
    bad["headers"]["id"] = bad["properties"]["correlation_id"] = str(uuid.uuid4())
    bad["properties"]["delivery_tag"] = str(uuid.uuid4())
    bad["body"] = base64.b64encode(b'{"not": "a list"}').decode()
    redis.rpush(key, json.dumps(bad))  # at the front: taken first
    running = start_pump()

    assert good_before.get(timeout=15) == job_id_for(good_before.id)
    [left] = redis.lrange(key, 0, -1)
    assert json.loads(left)["headers"][dispatch_queue.HANDED_BACK] == "workers"
    assert held() == 0 and running.thread.pumped == 2
    # The pump stops at the marked message until a worker has taken it.
    behind = send(tenant_id=tenant, intent_key=ECHO)
    time.sleep(0.3)
    assert behind.state == "PENDING" and queued() == 2
    worker = start_worker_process("-P", "solo", queues="dispatch")
    assert behind.get(timeout=30) == job_id_for(behind.id)
    wait_for(lambda: "malformed message for task 'dispatch_intent'" in worker.log(), 15,
             message="the worker to discard the malformed message")
    assert queued() == 0


def test_each_request_of_a_batch_goes_on_with_its_own_callers_trace(start_pump, tenant, traced):
    from app.core import tracing

    callers, results = [], []
    for name in ("academy app", "billing service"):
        with tracing.span(name) as caller:
            results.append(send(tenant_id=tenant, intent_key=ECHO, intent_params={"by": name}))
        callers.append(caller.traceparent)
    start_pump()
    ids = [r.get(timeout=15) for r in results]

    traced.wait_for(lambda got: len([s for s in got if s.name == "dispatch_intent"]) == 2,
                    what="a dispatch_intent span per request")
    for job_id, caller in zip(ids, callers, strict=True):
        _version, trace_id, caller_span, _flags = caller.split("-")
        [span] = [s for s in traced.named("dispatch_intent")
                  if s.attributes["jobq.job_id"] == job_id]
        assert (span.trace_id, span.parent_id, span.kind) == (trace_id, caller_span, "consumer")
        # The job's runs join the trace under its request's span.
        assert job_row(job_id)["traceparent"].startswith(f"00-{trace_id}-{span.span_id}-")
