"""One trace per job, read back from a real OTLP/HTTP receiver (tests/otlp.py) as Jaeger would
show it: a real ``jobq api`` process exporting its spans, the in-thread worker exporting the
runs', the payment gateway a real HTTP server (tests/outside.py). An academy app's request
(``POST /v1/jobs`` carrying its own ``traceparent``), the job's wait, each attempt (the retry
after the gateway's 503, a corrected retry asked for later over the API) and every call to the
gateway are spans of the app's one trace, each under the right parent; and the gateway is sent
the trace too. With no endpoint, no process imports OpenTelemetry, and nothing is sent.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
import uuid
from typing import Any

import pytest

from app.intake.submit import submit
from app.store import db
from tests.academy import enrol, make_class, make_invoice, make_student
from tests.api import ApiProcess, make_key
from tests.commands import jobq
from tests.console import ConsoleSession
from tests.fixtures import ROOT, make_tenant, wait_for_status
from tests.otlp import Received, Receiver

pytestmark = pytest.mark.usefixtures("worker")

INTENT = "billing.exec.sync_payment_status"


#: Where these tests' traces would be shown (the console and jobq job link a job's trace).
TRACE_URL = "http://jaeger.test:16686/trace/{trace_id}"


def traced_api(start_api, otlp: Receiver):
    return start_api({"OTEL_EXPORTER_OTLP_ENDPOINT": otlp.url, "OTEL_SERVICE_NAME": "jobq-api",
                      "OTEL_BSP_SCHEDULE_DELAY": "100", "JOBQ_TRACE_URL": TRACE_URL})


def paid(request) -> dict[str, Any]:
    """The gateway's answer: every invoice asked about was paid in full by card."""
    return {"payments": [
        {"id": f"pay-{invoice_id[:8]}", "invoice_id": invoice_id, "amount": 250_000,
         "paid_at": "2026-11-05T10:30:00+09:00", "method": "card", "status": "paid"}
        for invoice_id in request.json()["invoice_ids"]]}


def open_invoice(tenant: str) -> str:
    enrolment = enrol(make_student(tenant, "한지우"), make_class(tenant, fee=250_000))
    return str(make_invoice(enrolment, dt.date(2026, 11, 1), 250_000, dt.date(2026, 11, 10)).id)


def one(spans: list[Received], name: str, **attributes: Any) -> Received:
    found = [s for s in spans if s.name == name
             and all(s.attributes.get(k) == v for k, v in attributes.items())]
    assert len(found) == 1, f"{len(found)} spans {name} {attributes}:\n{Receiver.render(spans)}"
    return found[0]


def children(spans: list[Received], parent: Received, name: str) -> list[Received]:
    return [s for s in spans if s.parent_id == parent.span_id and s.name == name]


def test_a_job_asked_for_over_http_is_one_trace_from_the_request_to_the_gateway_across_a_retry(
        traced, start_api, gateway):
    tenant = make_tenant()
    invoice = open_invoice(tenant)
    gateway.script = [(503, {"error": "maintenance"})]
    gateway.default = (200, paid)
    api = traced_api(start_api, traced)
    app_trace, app_span = uuid.uuid4().hex, uuid.uuid4().hex[:16]

    assert api.client().get("/v1/health").status_code == 200  # as a load balancer checks
    reply = api.client(make_key(tenant)).post(
        "/v1/jobs", json={"intent_key": INTENT, "intent_params": {}},
        headers={"traceparent": f"00-{app_trace}-{app_span}-01"})
    assert reply.status_code == 201, reply.text
    job = wait_for_status(reply.json()["id"], timeout=30)
    assert (job["status"], job["retry_count"]) == ("completed", 1)

    traced.wait_for(lambda got: len([s for s in got if s.trace_id == app_trace]) >= 10,
                    what="the request's trace")
    trace = traced.trace(app_trace)
    print(Receiver.render(trace))  # the trace as text, for the note
    request = one(trace, "POST /v1/jobs")
    assert (request.parent_id, request.kind, request.service) == (app_span, "server", "jobq-api")
    assert request.attributes["http.response.status_code"] == 201
    [endpoint] = children(trace, request, "fastapi.endpoint")  # FastAPI's own span
    [submit] = children(trace, endpoint, "submit")
    assert submit.attributes["jobq.job_id"] == str(job["id"]) and submit.service == "jobq-api"
    # The row keeps the submit span's context: what a retry hours later joins.
    assert job["traceparent"] == f"00-{app_trace}-{submit.span_id}-01"

    waits = children(trace, submit, f"wait {INTENT}")
    runs = children(trace, submit, f"run {INTENT}")
    assert [w.attributes["jobq.attempt"] for w in waits] == [1, 2]
    assert [(r.attributes["jobq.attempt"], r.attributes["jobq.outcome"], r.failed)
            for r in runs] == [(1, "retry", True), (2, "completed", False)]
    assert "answered 503: maintenance" in runs[0].status_message
    for wait, run in zip(waits, runs, strict=True):
        assert (wait.attributes["jobq.academy.id"], wait.attributes["jobq.queue"],
                wait.attributes["jobq.job_id"]) == (tenant, "bulk", str(job["id"]))
        assert wait.end_ns <= run.start_ns + 50_000_000  # the wait ends as the run starts
        assert run.attributes["jobq.worker"] and run.kind == "consumer"
    calls = [children(trace, run, "payment-gateway POST") for run in runs]
    assert [[(c.kind, c.attributes["http.response.status_code"], c.failed) for c in made]
            for made in calls] == [[("client", 503, True)], [("client", 200, False)]]
    # The gateway was sent each call's own span as its parent: it can join the trace.
    assert [g.headers.get("traceparent") for g in gateway.received] == [
        f"00-{app_trace}-{c.span_id}-01" for made in calls for c in made]
    assert calls[0][0].attributes["url.full"] == f"{gateway.url}/payments/search"
    # Business data (the invoices asked about) is no attribute of any span.
    assert not [s for s in trace if invoice in str(s.attributes)]
    # The console's job page links the trace.
    console = ConsoleSession(api, make_key(tenant))
    shown = console.page(f"/ui/jobs/{job['id']}")
    assert f'href="{TRACE_URL.format(trace_id=app_trace)}"' in shown
    console.page(f"/ui/jobs/{job['id']}", fragment=1)  # a live refresh
    api.client(make_key(tenant)).get("/v1/jobs")  # then a request that is traced
    # Health checks and live refreshes make no traces of their own; the page does. (The API
    # sends its spans in the order they ended: once the last one is in, so is the rest.)
    traced.wait_for(lambda got: any(s.name == "GET /v1/jobs" for s in got), what="GET /v1/jobs")
    assert [s.name for s in traced.spans if s.service == "jobq-api" and s.kind == "server"
            and s.name.startswith("GET")] == ["GET /ui/jobs/{job_id}", "GET /v1/jobs"]


def failed_at_the_gateway(traced, start_api, gateway) -> tuple[ApiProcess, str, str, dict]:
    """A payment sync asked for over a traced API and failed for good by the gateway's 400
    (``(api, key, an open invoice, the job)``); the gateway answers 200 from then on."""
    tenant = make_tenant()
    invoice = open_invoice(tenant)
    gateway.default = (400, {"reason": "unknown merchant id"})
    api, key = traced_api(start_api, traced), make_key(tenant)
    reply = api.client(key).post("/v1/jobs", json={"intent_key": INTENT, "intent_params": {}})
    job = wait_for_status(reply.json()["id"], timeout=30)
    assert job["status"] == "failed" and "unknown merchant id" in job["error_message"]
    gateway.default = (200, paid)
    return api, key, invoice, job


def test_a_corrected_retry_asked_for_later_joins_the_trace_of_the_first_request(
        traced, start_api, gateway):
    api, key, invoice, job = failed_at_the_gateway(traced, start_api, gateway)
    first_trace = job["traceparent"].split("-")[1]
    client = api.client(key)
    retried = client.post(f"/v1/jobs/{job['id']}/retry",
                          json={"intent_params": {"invoice_ids": [invoice]}})
    assert retried.status_code == 200, retried.text
    job = wait_for_status(job["id"], "completed", timeout=30)

    traced.wait_for(lambda got: len([s for s in got if s.trace_id == first_trace and s.name in (
        f"run {INTENT}", "requeue")]) == 3 and any(s.name.endswith("/retry") for s in got),
        what="both runs, the requeue and the retry's request")
    trace = traced.trace(first_trace)
    print(Receiver.render(trace))
    submit = one(trace, "submit")
    requeue = one(trace, "requeue")
    assert requeue.parent_id == submit.span_id
    assert (requeue.attributes["jobq.params_corrected"], requeue.attributes["jobq.was"]) == (
        True, "failed")
    # The operator's request is a trace of its own, linked from the job's.
    [asked] = traced.wait_for(lambda got: [s for s in got if s.name.endswith("/retry")])
    assert asked.name == "POST /v1/jobs/{job_id}/retry" and asked.trace_id != first_trace
    [endpoint] = children(traced.trace(asked.trace_id), asked, "fastapi.endpoint")
    assert requeue.links == [(asked.trace_id, endpoint.span_id)]
    runs = [s for s in trace if s.name == f"run {INTENT}"]
    assert [(r.parent_id, r.attributes["jobq.outcome"]) for r in runs] == [
        (submit.span_id, "failed"), (submit.span_id, "completed")]
    assert runs[1].start_ns > requeue.start_ns


def test_a_request_sampled_out_leaves_its_jobs_runs_out_too(traced, start_api):
    # The API samples nothing (OTEL_TRACES_SAMPLER); the worker follows each job's request.
    api = start_api({"OTEL_EXPORTER_OTLP_ENDPOINT": traced.url, "OTEL_TRACES_SAMPLER": "always_off"})
    tenant = make_tenant()
    reply = api.client(make_key(tenant)).post(
        "/v1/jobs", json={"intent_key": "system.exec.echo", "intent_params": {}})
    sampled_out = wait_for_status(reply.json()["id"])
    with db.session() as session:  # beside it, a job asked for in a sampled trace
        sampled = submit(session, tenant_id=tenant, intent_key="system.exec.echo")
        session.commit()
    wait_for_status(sampled)

    traced.wait_for(lambda got: any(s.attributes.get("jobq.job_id") == sampled
                                    and s.name == "run system.exec.echo" for s in got),
                    what="the sampled job's run")
    # The decision, kept with the job: the traceparent's sampled flag (bit 0) is off.
    assert int(sampled_out["traceparent"].rsplit("-", 1)[1], 16) & 1 == 0
    assert [s.name for s in traced.spans
            if s.attributes.get("jobq.job_id") == str(sampled_out["id"])] == []


def test_a_corrected_retry_from_the_command_line_joins_the_trace_and_jobq_job_links_it(
        traced, start_api, gateway):
    _api, _key, invoice, job = failed_at_the_gateway(traced, start_api, gateway)
    job_id, trace_id = str(job["id"]), job["traceparent"].split("-")[1]
    traced_cli = {"OTEL_EXPORTER_OTLP_ENDPOINT": traced.url, "OTEL_SERVICE_NAME": "jobq-cli",
                  "JOBQ_TRACE_URL": TRACE_URL}
    retried = jobq("retry", job_id, "--params-json", json.dumps({"invoice_ids": [invoice]}),
                   env=traced_cli)
    assert retried.returncode == 0, retried.stderr
    assert wait_for_status(job_id, "completed")["status"] == "completed"
    # The command exported its span as it ended: the requeue, in the job's trace.
    [requeue] = traced.wait_for(lambda got: [s for s in got if s.name == "requeue"
                                             and s.trace_id == trace_id])
    assert requeue.service == "jobq-cli" and requeue.attributes["jobq.params_corrected"]
    assert requeue.attributes["jobq.requeued_by"].startswith("cli:")
    traced.wait_for(lambda got: len([s for s in got if s.trace_id == trace_id
                                     and s.name == f"run {INTENT}"]) == 2, what="both runs")
    shown = jobq("job", job_id, env=traced_cli).stdout
    assert [line.split() for line in shown.splitlines() if line.startswith("trace")] == [
        ["trace", TRACE_URL.format(trace_id=trace_id)]], shown


#: A caller process with every OpenTelemetry variable but the endpoint: it asks for a job with
#: ``submit`` and runs it on an in-thread worker, then says which modules it loaded.
UNTRACED_CALLER = """
import json, sys
from app.core import tracing
from app.intake.submit import submit
from app.store import db
from tests.fixtures import in_thread_worker, make_tenant, wait_for_status
tenant = make_tenant()
with in_thread_worker(concurrency=1):
    with db.session() as session:
        job = submit(session, tenant_id=tenant, intent_key="system.exec.echo")
        session.commit()
    row = wait_for_status(job)
from opentelemetry import trace
print(json.dumps({"status": row["status"], "traceparent": row["traceparent"],
                  "tracer": repr(tracing.tracer()),
                  "provider": type(trace.get_tracer_provider()).__name__,
                  "loaded": sorted(m for m in sys.modules
                                   if m.startswith(("opentelemetry.sdk.trace",
                                                    "opentelemetry.exporter")))}))
"""


def test_with_no_endpoint_nothing_of_opentelemetry_is_loaded_and_nothing_is_sent(
        otlp, start_api):
    import json

    everything_else = {"OTEL_SERVICE_NAME": "jobq-test", "OTEL_TRACES_SAMPLER": "always_on",
                       "OTEL_EXPORTER_OTLP_HEADERS": "x-tenant=test", "OTEL_BSP_SCHEDULE_DELAY": "100"}
    for extra in ({}, {"OTEL_EXPORTER_OTLP_ENDPOINT": otlp.url, "OTEL_SDK_DISABLED": "true"},
                  {"OTEL_EXPORTER_OTLP_ENDPOINT": otlp.url, "OTEL_TRACES_EXPORTER": "none"}):
        env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
        ran = subprocess.run([sys.executable, "-c", UNTRACED_CALLER], cwd=ROOT, timeout=120,
                             env={**env, **everything_else, **extra}, capture_output=True,
                             text=True)
        assert ran.returncode == 0, ran.stderr[-3000:]
        said = json.loads(ran.stdout.splitlines()[-1])
        # No provider, no exporter, not even their modules: redis-py alone loads OpenTelemetry's
        # metrics API where the SDK is installed (pyproject.toml, the tracing extra).
        assert said == {"status": "completed", "traceparent": None, "tracer": "None",
                        "provider": "ProxyTracerProvider", "loaded": []}, extra

    # Over HTTP: a request carrying a traceparent to an API with the SDK disabled.
    api = start_api({**everything_else, "OTEL_EXPORTER_OTLP_ENDPOINT": otlp.url,
                     "OTEL_SDK_DISABLED": "true"})
    tenant = make_tenant()
    reply = api.client(make_key(tenant)).post(
        "/v1/jobs", json={"intent_key": "system.exec.echo", "intent_params": {}},
        headers={"traceparent": f"00-{uuid.uuid4().hex}-{uuid.uuid4().hex[:16]}-01"})
    assert reply.status_code == 201
    job = wait_for_status(reply.json()["id"])
    assert (job["status"], job["traceparent"]) == ("completed", None)
    api.stop()  # a process that ends sends what it still holds
    assert otlp.requests == 0
