"""Tracing across real processes, each exporting its own spans to a real OTLP/HTTP receiver
(tests/otlp.py): a traced service asks for a job with ``dispatch_intent.delay``, beat's dispatch
pump writes its row, a prefork worker's pool process runs it. One trace, three services."""

from __future__ import annotations

from app import dispatch_intent
from app.core import tracing
from tests.fixtures import make_tenant, wait_for_status


def test_the_caller_beats_pump_and_a_prefork_worker_each_export_their_part_of_one_trace(
        traced, start_worker_process, start_beat_process):
    exporting = {"OTEL_EXPORTER_OTLP_ENDPOINT": traced.url, "OTEL_BSP_SCHEDULE_DELAY": "100"}
    start_beat_process(env={**exporting, "OTEL_SERVICE_NAME": "jobq-beat"})
    # Not the dispatch queue: what becomes a row, beat's pump made.
    start_worker_process("-P", "prefork", "-c", "2", queues="realtime",
                         env={**exporting, "OTEL_SERVICE_NAME": "jobq-worker"})
    tenant = make_tenant()
    with tracing.span("academy service") as caller:
        job_id = dispatch_intent.delay(tenant_id=tenant, intent_key="system.exec.echo",
                                       intent_params={"from": "a service"}).get(timeout=30)
    assert wait_for_status(job_id, timeout=30)["status"] == "completed"
    trace_id = caller.traceparent.split("-")[1]

    # Each process exports on its own schedule: the worker's wait span can arrive a batch before
    # its run span, so wait for the run itself, not only for a span from each service.
    traced.wait_for(lambda got: {s.service for s in got if s.trace_id == trace_id} == {
        "jobq", "jobq-beat", "jobq-worker"} and any(
            s.trace_id == trace_id and s.name == "run system.exec.echo" for s in got),
        what="the three services' spans and the run's")
    trace = traced.trace(trace_id)
    print(traced.render(trace))
    [root] = [s for s in trace if s.name == "academy service"]
    [dispatch] = [s for s in trace if s.name == "dispatch_intent"]
    assert (dispatch.service, dispatch.parent_id) == ("jobq-beat", root.span_id)
    runs = [(s.service, s.parent_id, s.attributes["jobq.worker"].split("@")[0][:5])
            for s in trace if s.name == "run system.exec.echo"]
    assert runs == [("jobq-worker", dispatch.span_id, "test-")]
