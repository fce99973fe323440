"""One trace per job, whichever way it was asked for, read back from a real OTLP/HTTP receiver
(tests/otlp.py) with the in-thread worker running the jobs: ``dispatch_intent`` from a traced
caller goes on with the caller's trace, ``submit`` starts one, a run's child jobs join its
parent's, and a job written by plain SQL (no trace to join) traces under its own id."""

from __future__ import annotations

import uuid

import pytest

from app import dispatch_intent
from app.core import tracing
from app.intake.submit import submit
from app.store import db
from tests.fixtures import sql, wait_for_status
from tests.otlp import Received, Receiver

pytestmark = pytest.mark.usefixtures("worker")


def under(spans: list[Received], parent: Received) -> list[str]:
    return sorted(s.name for s in spans if s.parent_id == parent.span_id)


def test_dispatch_intent_from_a_traced_caller_goes_on_with_the_callers_trace(traced, tenant):
    with tracing.span("caller") as caller:
        job_id = dispatch_intent.delay(tenant_id=tenant, intent_key="system.exec.echo",
                                       intent_params={"from": "a traced service"}).get(timeout=15)
    caller_trace = caller.traceparent.split("-")[1]
    wait_for_status(job_id)
    traced.wait_for(lambda got: any(s.name == "run system.exec.echo" and s.trace_id == caller_trace
                                    for s in got), what="the run in the caller's trace")
    trace = traced.trace(caller_trace)
    [root] = [s for s in trace if s.name == "caller"]
    [dispatch] = [s for s in trace if s.name == "dispatch_intent"]
    assert (dispatch.parent_id, dispatch.kind, dispatch.attributes["jobq.job_id"]) == (
        root.span_id, "consumer", job_id)
    assert under(trace, dispatch) == ["run system.exec.echo", "wait system.exec.echo"]


def test_a_runs_child_jobs_join_its_trace(traced, tenant):
    with db.session() as session:
        parent = submit(session, tenant_id=tenant, intent_key="test.exec.fan_out",
                        intent_params={"children": 2})
        session.commit()
    children = wait_for_status(parent)["result"]["children"]
    for child in children:
        wait_for_status(child)
    trace_id = traced.wait_for(
        lambda got: [s.trace_id for s in got if s.name == "run test.exec.fan_out"])[0]
    traced.wait_for(lambda got: len([s for s in got if s.trace_id == trace_id
                                     and s.name == "run system.exec.echo"]) == 2,
                    what="both children's runs")
    trace = traced.trace(trace_id)
    print(Receiver.render(trace))
    [run] = [s for s in trace if s.name == "run test.exec.fan_out"]
    [asked] = [s for s in trace if s.parent_id == run.span_id and s.name == "submit"]
    assert (asked.attributes["jobq.source"], asked.attributes["jobq.jobs"]) == ("fanout", 2)
    assert under(trace, asked) == ["run system.exec.echo"] * 2 + ["wait system.exec.echo"] * 2
    assert sorted(s.attributes["jobq.job_id"] for s in trace
                  if s.parent_id == asked.span_id) == sorted(children * 2)


def test_a_job_written_by_plain_sql_traces_under_its_own_id(traced, tenant):
    from app.beat.sweep import sweep

    [(job_id,)] = sql("INSERT INTO job_executions (tenant_id, intent_key, intent_params) "
                      "VALUES (:t, 'system.exec.echo', '{}') RETURNING id::text", t=tenant)
    sweep()  # beat's sweep routes it to its queue
    row = wait_for_status(job_id)
    assert (row["status"], row["traceparent"]) == ("completed", None)
    trace_id = uuid.UUID(job_id).hex
    traced.wait_for(lambda got: len([s for s in got if s.trace_id == trace_id]) == 2,
                    what="the job's own trace")
    spans = traced.trace(trace_id)
    assert sorted((s.name, s.parent_id) for s in spans) == [
        ("run system.exec.echo", None), ("wait system.exec.echo", None)]


def test_an_approval_is_a_span_of_the_jobs_trace_and_its_run_follows(traced, tenant):
    from app.intake.actions import approve

    with db.session() as session:
        job_id = submit(session, tenant_id=tenant, intent_key="test.exec.approved_echo",
                        intent_params={"n": 1})
        session.commit()
    with tracing.span("console request") as person:
        assert approve(job_id, by="원장 김", note="확인") is not None
    wait_for_status(job_id, "completed")
    trace_id = traced.wait_for(lambda got: [s.trace_id for s in got if s.name == "approve"])[0]
    traced.wait_for(lambda got: any(s.trace_id == trace_id and s.name.startswith("run ")
                                    for s in got), what="the run")
    trace = traced.trace(trace_id)
    [asked] = [s for s in trace if s.name == "submit"]
    [approval] = [s for s in trace if s.name == "approve"]
    assert (approval.parent_id, approval.attributes["jobq.approved_by"]) == (asked.span_id,
                                                                            "원장 김")
    assert approval.links == [tuple(person.traceparent.split("-")[1:3])]
    # The wait starts at the approval, not while a person decided.
    [wait] = [s for s in trace if s.name == "wait test.exec.approved_echo"]
    assert wait.parent_id == asked.span_id and wait.start_ns >= approval.start_ns - 50_000_000



def test_an_attempt_whose_worker_died_is_a_lost_span_of_the_jobs_trace(traced, tenant):
    import secrets

    from app.beat import recovery
    from app.run import lease

    with db.session() as session:  # due later: no worker takes it in the meantime
        job_id = submit(session, tenant_id=tenant, intent_key="system.exec.echo",
                        run_at="2099-01-01T00:00:00+00:00")
        session.commit()
    dead = f"{lease.HOST}:999999:l{secrets.token_hex(8)}-{secrets.token_hex(16)}"
    sql("UPDATE job_executions SET status = 'processing', executed_at = now() - interval '5 s', "
        "worker = 'realtime@gone', lease_owner = :owner, "
        "lease_expires_at = now() + interval '30 seconds' WHERE id = CAST(:id AS uuid)",
        owner=dead, id=job_id)

    assert job_id in [r.id for r in recovery.recover_once()]
    [run] = traced.wait_for(lambda got: [s for s in got if s.name == "run system.exec.echo"
                                         and s.attributes["jobq.job_id"] == job_id])
    [asked] = [s for s in traced.trace(run.trace_id) if s.name == "submit"]
    assert (run.parent_id, run.attributes["jobq.outcome"], run.attributes["jobq.worker"]) == (
        asked.span_id, "lost", "realtime@gone")
    assert run.failed and "worker lost" in run.status_message
    assert 4.5e9 < run.end_ns - run.start_ns < 60e9  # from its start to the recovery
