"""dispatch_intent and submit end to end: real Redis, real PostgreSQL, an in-thread worker."""

from __future__ import annotations

import datetime as dt
import uuid

import pytest
from celery import Celery

from app import cancel, dispatch_intent, job_id_for, submit
from app.broker.celery_app import celery_app
from app.broker.publish import Outgoing, publish
from app.core.errors import IdempotencyConflict, IntentRefused, ParamsNotKept, TenantRefused
from app.core.registry import manifest
from app.core.validation import Request, validate_params
from app.intake.actions import requeue, run_stopped
from app.intake.submit import submit_many
from app.store import db, jobstore
from tests.academy import late_fees, overdue_invoices
from tests.conftest import KEY_PREFIX, REDIS_URL
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


def dispatch(**kwargs) -> str:
    return dispatch_intent.delay(**kwargs).get(timeout=15)


@pytest.mark.smoke
def test_dispatched_intent_completes_with_timestamps_result_and_events(tenant):
    job_id = dispatch(tenant_id=tenant, intent_key="system.exec.echo",
                      intent_params={"greeting": "안녕하세요", "n": 3})

    row = wait_for_status(job_id, "completed")
    assert row["status"] == "completed"
    assert row["source"] == "dispatch"
    assert row["result"] == {"greeting": "안녕하세요", "n": 3}
    assert row["intent_params"] == {"greeting": "안녕하세요", "n": 3}
    assert row["queue"] == "realtime"
    assert row["retry_count"] == 0 and row["error_message"] is None
    assert row["created_at"] <= row["executed_at"] <= row["completed_at"]
    assert row["worker"] and row["lease_owner"] is None
    assert event_kinds(job_id) == [(0, "created"), (1, "started"), (1, "completed")]
    started = job_events(job_id)[1]
    assert started["worker"] == row["worker"]


def test_job_id_is_derived_from_the_dispatch_message(tenant):
    result = dispatch_intent.delay(tenant_id=tenant, intent_key="system.exec.echo")
    assert result.get(timeout=15) == job_id_for(result.id)


def test_flaky_intent_is_retried_with_backoff_then_completes(tenant):
    job_id = dispatch(tenant_id=tenant, intent_key="system.exec.flaky",
                      intent_params={"failures": 2})

    row = wait_for_status(job_id, "completed")
    assert row["retry_count"] == 2
    assert row["result"] == {"attempts": 3, "payload": None}
    assert row["error_message"] is None
    assert event_kinds(job_id) == [
        (0, "created"), (1, "started"), (1, "retry"), (2, "started"), (2, "retry"),
        (3, "started"), (3, "completed"),
    ]
    retries = [e for e in job_events(job_id) if e["kind"] == "retry"]
    assert all("TransientError: flaky: planned failure" in e["error"] for e in retries)
    assert all(e["detail"]["delay_seconds"] > 0 for e in retries)


def test_retries_exhausted_fail_the_job_with_the_last_error(tenant):
    job_id = dispatch(tenant_id=tenant, intent_key="system.exec.flaky",
                      intent_params={"failures": 5}, max_retries=1)

    row = wait_for_status(job_id, "failed")
    assert row["retry_count"] == 1
    assert row["error_message"] == "TransientError: flaky: planned failure 2 of 5"
    assert [k for _, k in event_kinds(job_id)][-1] == "failed"
    assert row["completed_at"] is not None


def test_permanent_error_fails_at_once_with_its_traceback(tenant):
    # A sleep row written with bad parameters by plain SQL reaches the handler unvalidated.
    job_id = sql(
        "INSERT INTO job_executions (tenant_id, intent_key, intent_params) "
        "VALUES (:t, 'system.exec.sleep', '{\"seconds\": -1}') RETURNING id::text",
        t=tenant,
    )[0][0]
    publish([Outgoing(job_id, tenant, "system.exec.sleep", "realtime")])

    row = wait_for_status(job_id, "failed")
    assert row["retry_count"] == 0
    assert "invalid intent_params for 'system.exec.sleep'" in row["error_message"]
    assert "greater than or equal to 0" in row["error_message"]
    failed = next(e for e in job_events(job_id) if e["kind"] == "failed")
    assert "Traceback" in failed["traceback"] and "PermanentError" in failed["traceback"]


# --- bad input ------------------------------------------------------------------------------------


def test_unknown_intent_is_refused_and_recorded(tenant):
    with pytest.raises(IntentRefused) as refused:
        dispatch(tenant_id=tenant, intent_key="system.exec.ecco", intent_params={"a": 1})

    message = str(refused.value)
    assert "unknown intent key 'system.exec.ecco'" in message
    assert "did you mean 'system.exec.echo'" in message
    rows = sql("SELECT status, error_message, intent_params FROM job_executions "
               "WHERE tenant_id = :t AND intent_key = 'system.exec.ecco'", t=tenant)
    assert rows == [("failed", message, {"a": 1})]


@pytest.mark.smoke
def test_invalid_params_are_refused_naming_each_field(tenant):
    with pytest.raises(IntentRefused) as refused:
        dispatch(tenant_id=tenant, intent_key="system.exec.sleep",
                 intent_params={"seconds": "soon", "colour": "red"})

    message = str(refused.value)
    assert message.startswith("invalid intent_params for 'system.exec.sleep': ")
    assert "seconds: Input should be a valid number" in message and "'soon'" in message
    assert "colour: Extra inputs are not permitted" in message
    (status, error), = sql("SELECT status, error_message FROM job_executions "
                           "WHERE tenant_id = :t", t=tenant)
    assert (status, error) == ("failed", message)


def test_missing_param_is_named(tenant):
    with pytest.raises(IntentRefused, match=r"seconds: Field required"):
        dispatch(tenant_id=tenant, intent_key="system.exec.sleep", intent_params={})


def test_unknown_tenant_is_refused_without_a_row():
    stranger = str(uuid.uuid4())
    with pytest.raises(IntentRefused, match=f"unknown tenant {stranger}"):
        dispatch(tenant_id=stranger, intent_key="system.exec.echo")
    assert sql("SELECT count(*) FROM job_executions WHERE tenant_id = :t", t=stranger) == [(0,)]


def test_malformed_tenant_id_is_refused():
    with pytest.raises(IntentRefused, match=r"tenant_id 'academy-7' is not a UUID"):
        dispatch(tenant_id="academy-7", intent_key="system.exec.echo")


def test_suspended_tenant_is_refused():
    suspended = make_tenant(status="suspended")
    with pytest.raises(IntentRefused, match="is suspended"):
        dispatch(tenant_id=suspended, intent_key="system.exec.echo")
    assert sql("SELECT count(*) FROM job_executions WHERE tenant_id = :t", t=suspended) == [(0,)]


def test_params_over_64_kib_are_refused_and_not_stored(tenant):
    with pytest.raises(IntentRefused, match=r"intent_params is 70,0\d\d bytes of JSON; the limit is 65,536"):
        dispatch(tenant_id=tenant, intent_key="system.exec.echo",
                 intent_params={"blob": "x" * 70_000})
    rows = sql("SELECT status, intent_params FROM job_executions WHERE tenant_id = :t", t=tenant)
    assert rows == [("failed", None)]


def test_bad_run_at_and_max_retries_are_refused(tenant):
    with pytest.raises(IntentRefused, match="run_at 'tomorrow' is not an ISO 8601 time"):
        dispatch(tenant_id=tenant, intent_key="system.exec.echo", run_at="tomorrow")
    with pytest.raises(IntentRefused, match=r"max_retries 99 must be within 0..25"):
        dispatch(tenant_id=tenant, intent_key="system.exec.echo", max_retries=99)


def test_refusal_is_not_retried(tenant):
    result = dispatch_intent.delay(tenant_id=tenant, intent_key="nope.exec.nothing")
    with pytest.raises(IntentRefused):
        result.get(timeout=15)
    assert result.state == "FAILURE"
    # A retry would have re-run the dispatch under the same message id: its row is the only one,
    # failed at once with no attempt spent on it.
    [row] = sql("SELECT status, retry_count, max_retries FROM job_executions WHERE tenant_id = :t",
                t=tenant)
    assert tuple(row) == ("failed", 0, 0)


# --- retrying a job whose parameters were not kept -----------------------------------------------

LATE_FEES = "billing.exec.apply_late_fees"
#: What the caller asked for: 1% after 30 days (the intent's defaults: 5% after 7 days).
ASKED = {"percent": 1, "grace_days": 30, "note": "x" * 70_000}


def refused_late_fees(tenant: str) -> str:
    """The id of a late-fees job refused for its oversized parameters, submitted from Python."""
    with db.session() as session:
        with pytest.raises(IntentRefused, match="intent_params is 70,0") as refused:
            submit(session, tenant_id=tenant, intent_key=LATE_FEES, intent_params=ASKED)
        session.commit()  # keeps the refusal's row
    row = job_row(refused.value.job_id)
    assert (row["status"], row["intent_params"], row["params_dropped"]) == ("failed", None, True)
    return refused.value.job_id


def test_a_job_whose_parameters_were_not_kept_is_requeued_only_on_new_ones(tenant):
    # Issue 22 (8): requeued as it was, it ran on the intent's defaults.
    old, recent = overdue_invoices(tenant)
    job_id = refused_late_fees(tenant)

    with pytest.raises(ParamsNotKept) as refused:
        requeue([{"id": job_id}], by="test")
    assert str(refused.value).startswith(f"job {job_id} was refused and its parameters were "
                                         "not kept (intent_params is 70,0")
    assert "params=" in str(refused.value) and refused.value.job_id == job_id
    assert isinstance(refused.value, IntentRefused)
    # The statement itself refuses too, whoever calls it.
    with db.engine().begin() as conn:
        assert jobstore.requeue(conn, job_id, by="test") is None
    row = job_row(job_id)
    assert (row["status"], row["intent_params"]) == ("failed", None)
    assert [k for _, k in event_kinds(job_id)] == ["refused"]
    assert late_fees(tenant) == {old.id: 0, recent.id: 0}

    new = validate_params(manifest.get(LATE_FEES),
                          {"percent": 1, "grace_days": 30, "notify_guardians": False})
    assert requeue([{"id": job_id}], by="test", params=new) == [(job_id, "failed", "pending")]
    row = wait_for_status(job_id, "completed")
    assert row["params_dropped"] is False and row["result"]["invoices"] == 1
    assert late_fees(tenant) == {old.id: 5_000, recent.id: 0}


def test_a_worker_does_not_run_a_job_whose_parameters_were_not_kept(tenant):
    old, recent = overdue_invoices(tenant)
    job_id = refused_late_fees(tenant)
    # Put back to pending from outside the engine (plain SQL), and its message sent.
    sql("UPDATE job_executions SET status = 'pending', error_message = NULL, "
        "completed_at = NULL WHERE id = :j", j=job_id)
    publish([Outgoing(job_id, tenant, LATE_FEES, "bulk")])

    row = wait_for_status(job_id, "failed")
    assert "its parameters were not kept when it was refused" in row["error_message"]
    assert row["result"] is None
    assert [k for _, k in event_kinds(job_id)] == ["refused", "started", "failed"]
    assert late_fees(tenant) == {old.id: 0, recent.id: 0}


# --- idempotency and duplicates -------------------------------------------------------------------


def test_idempotency_key_returns_the_same_job_which_runs_once(tenant):
    first = dispatch(tenant_id=tenant, intent_key="system.exec.echo",
                     intent_params={"n": 1}, idempotency_key="invoice-2026-11")
    second = dispatch(tenant_id=tenant, intent_key="system.exec.echo",
                      intent_params={"n": 1}, idempotency_key="invoice-2026-11")

    assert first == second
    wait_for_status(first, "completed")
    assert event_kinds(first) == [(0, "created"), (1, "started"), (1, "completed")]
    assert sql("SELECT count(*) FROM job_executions WHERE tenant_id = :t", t=tenant) == [(1,)]


def test_a_reused_idempotency_key_for_another_request_is_a_conflict_naming_it(tenant):
    # Issue 22 (10): a different request under a used key silently got the old job back.
    key = f"late-fees-{uuid.uuid4().hex[:8]}"
    asked = {"intent_key": "system.exec.echo", "intent_params": {"percent": 1},
             "run_at": "2099-03-01T09:00:00+09:00", "idempotency_key": key}
    first = dispatch(tenant_id=tenant, **asked)
    before = job_row(first)
    # The same request, however spelt: the same job.
    assert dispatch(tenant_id=tenant, **{**asked, "run_at": "2099-03-01T00:00:00Z"}) == first

    different = [{"intent_params": {"percent": 5}}, {"intent_params": None},
                 {"run_at": "2099-03-02T09:00:00+09:00"}, {"run_at": None},
                 {"intent_key": "system.exec.sleep", "intent_params": {"seconds": 1}}]
    for change in different:
        with pytest.raises(IdempotencyConflict) as conflict:  # through the broker
            dispatch(tenant_id=tenant, **{**asked, **change})
        assert str(conflict.value).startswith(
            f"idempotency key {key!r} was already used for a different request (job {first})")
        with db.session() as session, pytest.raises(IdempotencyConflict) as conflict:
            submit(session, tenant_id=tenant, **{**asked, **change})
        assert (conflict.value.job_id, conflict.value.field) == (first, "idempotency_key")
        assert isinstance(conflict.value, IntentRefused)
    with db.session() as session, pytest.raises(IdempotencyConflict):
        submit_many(session, [Request(tenant, "system.exec.echo", {"n": 1}),
                              Request(tenant, "system.exec.echo", {"percent": 2},
                                      idempotency_key=key, run_at=asked["run_at"])])
    # Nothing was written for them, and the first job is as it was.
    assert sql("SELECT count(*) FROM job_executions WHERE tenant_id = :t", t=tenant) == [(1,)]
    assert job_row(first) == before
    assert [k for _, k in event_kinds(first)] == ["created"]


def test_a_key_a_plain_insert_used_is_compared_with_what_that_row_asked_for(tenant):
    key = f"sql-{uuid.uuid4().hex[:8]}"
    [(first,)] = sql("INSERT INTO job_executions (tenant_id, intent_key, intent_params, "
                     "idempotency_key, run_at) VALUES (:t, 'system.exec.echo', '{\"n\": 1}', "
                     ":k, '2099-01-01T00:00:00Z') RETURNING id::text", t=tenant, k=key)
    again = {"tenant_id": tenant, "intent_key": "system.exec.echo", "intent_params": {"n": 1},
             "idempotency_key": key, "run_at": "2099-01-01T09:00:00+09:00"}
    with db.session() as session:
        assert submit(session, **again) == first
    with db.session() as session, pytest.raises(IdempotencyConflict, match=first):
        submit(session, **{**again, "intent_params": {"n": 2}})


def test_duplicate_message_for_a_finished_job_runs_nothing(tenant, caplog):
    job_id = dispatch(tenant_id=tenant, intent_key="system.exec.echo", intent_params={"x": 1})
    before = wait_for_status(job_id, "completed")

    caplog.set_level("INFO", logger="jobq.jobs")
    publish([Outgoing(job_id, tenant, "system.exec.echo", "realtime")] * 3)
    # The worker took all three and dropped each, saying why (what it does instead of a run).
    wait_for(lambda: sum(1 for r in caplog.records if getattr(r, "job_id", None) == job_id
                         and r.getMessage() == "message dropped: the job is already completed")
             == 3, 15, message="the three duplicates to be dropped")

    after = job_row(job_id)
    assert after["completed_at"] == before["completed_at"]
    assert event_kinds(job_id) == [(0, "created"), (1, "started"), (1, "completed")]


def test_duplicate_message_for_a_running_job_is_dropped(tenant):
    job_id = dispatch(tenant_id=tenant, intent_key="system.exec.sleep",
                      intent_params={"seconds": 1.5})
    wait_for_status(job_id, "processing")
    publish([Outgoing(job_id, tenant, "system.exec.sleep", "realtime")])

    wait_for_status(job_id, "completed")
    assert event_kinds(job_id) == [(0, "created"), (1, "started"), (1, "completed")]


# --- cancel -------------------------------------------------------------------------------------


def test_cancel_a_running_job_marks_it_cancelled_and_stops_its_run(tenant):
    job_id = dispatch(tenant_id=tenant, intent_key="system.exec.sleep",
                      intent_params={"seconds": 20})
    wait_for_status(job_id, "processing")

    assert cancel(job_id, reason="operator asked") == "processing"
    stopped = run_stopped(job_id, wait=5)

    assert stopped is not None and stopped.interrupted and stopped.after < 2.5
    row = job_row(job_id)
    assert row["status"] == "cancelled" and row["error_message"] == "operator asked"
    assert [k for _, k in event_kinds(job_id)] == ["created", "started", "cancelled", "stopped"]
    assert job_events(job_id)[-1]["detail"]["reason"] == "cancelled"


def test_cancel_a_finished_job_changes_nothing(tenant):
    job_id = dispatch(tenant_id=tenant, intent_key="system.exec.echo")
    wait_for_status(job_id, "completed")
    assert cancel(job_id) is None
    assert job_row(job_id)["status"] == "completed"


def test_cancel_task_cancels_a_scheduled_job(tenant):
    later = (dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)).isoformat()
    job_id = dispatch(tenant_id=tenant, intent_key="system.exec.echo", run_at=later)
    assert celery_app.send_task("jobq.cancel_job", args=[job_id]).get(timeout=15) == "pending"
    assert job_row(job_id)["status"] == "cancelled"


# --- submit ---------------------------------------------------------------------------------------






def test_submit_refusal_raises_and_its_row_is_kept_on_commit(tenant):
    from app.store import db

    with db.session() as session:
        with pytest.raises(IntentRefused) as refused:
            submit(session, tenant_id=tenant, intent_key="system.exec.sleep",
                   intent_params={"seconds": [1]})
        session.commit()
    row = job_row(refused.value.job_id)
    assert row["status"] == "failed" and "seconds" in row["error_message"]


def test_submit_for_an_unknown_tenant_raises_tenant_refused():
    from app.store import db

    with db.session() as session, pytest.raises(TenantRefused):
        submit(session, tenant_id=str(uuid.uuid4()), intent_key="system.exec.echo")


# --- other entry points ---------------------------------------------------------------------------


def test_vanilla_celery_client_that_knows_only_the_broker_can_dispatch(tenant):
    result = _vanilla().send_task("dispatch_intent", kwargs={
        "tenant_id": tenant, "intent_key": "system.exec.echo", "intent_params": {"from": "php"},
    })
    job_id = result.get(timeout=15)
    assert wait_for_status(job_id, "completed")["result"] == {"from": "php"}


def _vanilla() -> Celery:
    vanilla = Celery(broker=REDIS_URL, backend=REDIS_URL)
    vanilla.conf.broker_transport_options = {"global_keyprefix": KEY_PREFIX}
    vanilla.conf.result_backend_transport_options = {"global_keyprefix": KEY_PREFIX}
    return vanilla


ECHO = {"intent_key": "system.exec.echo", "intent_params": {"from": "php"}}


@pytest.mark.parametrize(("call", "says"), [
    ({"kwargs": {**ECHO, "colour": "red"}},
     "unknown argument 'colour' for dispatch_intent; it takes tenant_id, intent_key, "
     "intent_params, idempotency_key, run_at, max_retries"),
    ({"kwargs": {**ECHO, "intent_param": {"x": 1}}},
     "unknown argument 'intent_param' for dispatch_intent (did you mean 'intent_params'?)"),
    ({"args": ["system.exec.echo", {}, None, None, None, 7], "kwargs": {}},
     "dispatch_intent takes at most 6 positional arguments"),
    ({"args": [], "kwargs": {**ECHO, "intent_params": "from=php"}},
     "intent_params must be a JSON object, not str"),
    ({"args": [], "kwargs": {**ECHO, "max_retries": "3"}},
     "max_retries must be an integer, not str"),
    ({"args": [], "kwargs": {**ECHO, "run_at": 1764000000}},
     "run_at must be an ISO 8601 string or a datetime, not int"),
])
def test_a_vanilla_client_with_a_bad_keyword_or_type_leaves_a_failed_row_naming_it(
        tenant, call, says):
    args = call.get("args")
    if args:  # the tenant first, as a positional caller gives it
        args = [tenant, *args]
    kwargs = {**call["kwargs"]} if args else {"tenant_id": tenant, **call["kwargs"]}
    result = _vanilla().send_task("dispatch_intent", args=args, kwargs=kwargs)
    with pytest.raises(Exception) as refused:
        result.get(timeout=15)
    assert says in str(refused.value)
    row = job_row(job_id_for(result.id))
    assert row is not None, "no row was written"
    assert row["status"] == "failed" and says in row["error_message"]
    assert row["source"] == "dispatch" and row["intent_key"] == "system.exec.echo"
    assert event_kinds(row["id"]) == [(0, "refused")]


def test_a_bad_keyword_for_an_unknown_or_suspended_tenant_is_refused_without_a_row():
    suspended = make_tenant(status="suspended")
    for kwargs, says in (
        ({"tenant": suspended, **ECHO},
         "tenant_id None is not a UUID; unknown argument 'tenant' for dispatch_intent "
         "(did you mean 'tenant_id'?)"),
        ({"tenant_id": suspended, **ECHO, "colour": "red"},
         f"tenant {suspended} is suspended; its jobs are refused; unknown argument 'colour'"),
    ):
        result = _vanilla().send_task("dispatch_intent", kwargs=kwargs)
        with pytest.raises(Exception) as refused:
            result.get(timeout=15)
        assert says in str(refused.value)
        assert job_row(job_id_for(result.id)) is None
    assert sql("SELECT count(*) FROM job_executions WHERE tenant_id = :t", t=suspended) == [(0,)]


def test_handler_task_called_directly_is_mirrored_too(tenant):
    result = celery_app.send_task("system.exec.echo",
                                  kwargs={"tenant_id": tenant, "intent_params": {"direct": 1}})
    row = wait_for_status(result.id, "completed")
    assert row["source"] == "direct" and row["result"] == {"direct": 1}
    assert event_kinds(result.id) == [(0, "created"), (1, "started"), (1, "completed")]


def test_direct_call_with_bad_params_is_recorded_as_failed(tenant):
    result = celery_app.send_task("system.exec.sleep",
                                  kwargs={"tenant_id": tenant, "intent_params": {"seconds": "x"}})
    row = wait_for_status(result.id, "failed")
    assert row["source"] == "direct" and "seconds" in row["error_message"]


def test_run_at_in_the_near_future_does_not_start_early(tenant):
    run_at = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=2)
    job_id = dispatch(tenant_id=tenant, intent_key="system.exec.echo", run_at=run_at.isoformat())
    row = wait_for_status(job_id, "completed", timeout=10)
    assert row["executed_at"] >= run_at


def test_naive_run_at_is_seoul_time(tenant):
    seoul_now = dt.datetime.now(dt.UTC) + dt.timedelta(hours=9)
    naive = (seoul_now + dt.timedelta(hours=2)).replace(tzinfo=None)
    job_id = dispatch(tenant_id=tenant, intent_key="system.exec.echo", run_at=naive.isoformat())
    row = job_row(job_id)
    assert row["status"] == "pending" and row["published_at"] is None
    assert abs((row["run_at"] - (dt.datetime.now(dt.UTC) + dt.timedelta(hours=2))).total_seconds()) < 5


def test_plain_sql_insert_of_the_original_shape_runs(tenant):
    from app.beat.sweep import sweep_once

    job_id = sql("INSERT INTO job_executions (tenant_id, intent_key, intent_params) "
                 "VALUES (:t, 'system.exec.echo', '{\"legacy\": true}') RETURNING id::text",
                 t=tenant)[0][0]
    assert job_row(job_id)["status"] == "pending"
    wait_for(lambda: sweep_once()[1] >= 1 or job_row(job_id)["status"] != "pending",
             message="the sweep to publish the row")
    row = wait_for_status(job_id, "completed")
    assert row["source"] == "sql" and row["result"] == {"legacy": True}
    assert row["queue"] == "realtime"
