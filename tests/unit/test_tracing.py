"""app.core.tracing without services: a process's own tracer provider is used and left to it,
and a stored traceparent read back as a trace id and a link."""

from __future__ import annotations

import pytest

from app.core import tracing
from tests.otlp import reset_tracing


def test_a_process_that_installed_its_own_provider_keeps_it(configure):
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    reset_tracing()
    mine, memory = TracerProvider(), InMemorySpanExporter()
    mine.add_span_processor(SimpleSpanProcessor(memory))
    trace.set_tracer_provider(mine)
    configure(otlp_endpoint="http://127.0.0.1:9")  # nothing listens: jobq adds no exporter
    try:
        with tracing.span("submit", attributes={"jobq.source": "submit"}):
            pass
        assert [(s.name, s.attributes["jobq.source"]) for s in memory.get_finished_spans()] == [
            ("submit", "submit")]
        tracing.shutdown()  # a worker process ending: the process's provider goes on
        with mine.get_tracer("the host").start_as_current_span("after"):
            pass
        assert [s.name for s in memory.get_finished_spans()] == ["submit", "after"]
        assert trace.get_tracer_provider() is mine
    finally:
        reset_tracing()


@pytest.mark.parametrize(("stored", "trace_id"), [
    ("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
     "4bf92f3577b34da6a3ce929d0e0e4736"),
    (None, None),
    ("", None),
    ("not a traceparent", None),
    ("00-4bf92f35-00f067aa0ba902b7-01", None),
])
def test_a_stored_traceparent_names_its_trace(configure, stored, trace_id):
    assert tracing.trace_id_of(stored) == trace_id
    assert tracing.trace_link(stored) is None  # no JOBQ_TRACE_URL: no link
    configure(trace_url="https://grafana.example/explore?traceId={trace_id}")
    assert tracing.trace_link(stored) == (
        None if trace_id is None else f"https://grafana.example/explore?traceId={trace_id}")


def test_jobq_runs_summary_says_where_traces_go_without_a_password(configure):
    from app.ops.cli.run import _urls

    assert _urls(None, False, "jobq") == []  # tracing off: no line
    configure(otlp_endpoint="https://jobq:s3cret@collector.example:4318",
              trace_url="http://jaeger:16686/trace/{trace_id}")
    [(what, where)] = _urls(None, False, "jobq")
    assert what == "Traces" and "s3cret" not in where
    assert where.endswith("@collector.example:4318/v1/traces (OTLP/HTTP); a job's: "
                          "http://jaeger:16686/trace/{trace_id}")
