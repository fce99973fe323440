"""A real OTLP/HTTP receiver inside the test process: an HTTP server on a free port that takes
``POST /v1/traces`` as a collector does (protobuf ``ExportTraceServiceRequest``, gzip or not),
decodes every span with opentelemetry-proto's own messages, and answers as a collector answers.
A test reads the spans back as a user of Jaeger would: one trace, its spans, their parents.

tests/conftest.py loads this module as a plugin: a test asks for ``otlp`` (the receiver) or
``traced`` (the receiver, and this process's tracing exporting to it: the in-thread worker's
runs are traced).
"""

from __future__ import annotations

import gzip
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

# Span.SpanKind and Status.StatusCode of opentelemetry/proto/trace/v1/trace.proto.
KINDS = {1: "internal", 2: "server", 3: "client", 4: "producer", 5: "consumer"}
STATUSES = {1: "ok", 2: "error"}


def _value(value: Any) -> Any:
    which = value.WhichOneof("value")
    if which == "array_value":
        return [_value(v) for v in value.array_value.values]
    return getattr(value, which) if which else None


def _attributes(pairs: Any) -> dict[str, Any]:
    return {kv.key: _value(kv.value) for kv in pairs}


@dataclass(frozen=True)
class Received:
    """One span as the collector got it (ids in hex, as Jaeger shows them)."""

    trace_id: str
    span_id: str
    parent_id: str | None
    name: str
    kind: str
    start_ns: int
    end_ns: int
    attributes: dict[str, Any]
    #: ``"error"`` with its message, or ``"unset"`` / ``"ok"``.
    status: str
    status_message: str
    events: list[tuple[str, dict[str, Any]]]
    links: list[tuple[str, str]]
    service: str

    @property
    def failed(self) -> bool:
        return self.status == "error"


@dataclass
class Receiver:
    url: str
    spans: list[Received] = field(default_factory=list)
    #: Every export request that arrived (a request with no spans counts too).
    requests: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def take(self, body: bytes) -> None:
        # Imported here: a test process that never receives spans never loads OpenTelemetry.
        from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
            ExportTraceServiceRequest,
        )

        request = ExportTraceServiceRequest.FromString(body)
        got = []
        for resource_spans in request.resource_spans:
            service = _attributes(resource_spans.resource.attributes).get("service.name", "")
            for scope_spans in resource_spans.scope_spans:
                for s in scope_spans.spans:
                    got.append(Received(
                        s.trace_id.hex(), s.span_id.hex(), s.parent_span_id.hex() or None,
                        s.name, KINDS.get(s.kind, str(s.kind)), s.start_time_unix_nano,
                        s.end_time_unix_nano, _attributes(s.attributes),
                        STATUSES.get(s.status.code, "unset"), s.status.message,
                        [(e.name, _attributes(e.attributes)) for e in s.events],
                        [(link.trace_id.hex(), link.span_id.hex()) for link in s.links],
                        service))
        with self.lock:
            self.requests += 1
            self.spans.extend(got)

    def wait_for(self, predicate: Callable[[list[Received]], Any], timeout: float = 20.0,
                 what: str = "spans") -> Any:
        """``predicate(spans so far)``'s first true value, flushing this process's spans."""
        from app.core import tracing

        deadline = time.monotonic() + timeout
        while True:
            tracing.flush()
            with self.lock:
                found = predicate(list(self.spans))
            if found:
                return found
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}; got:\n"
                                     + self.render(self.spans))
            time.sleep(0.1)

    def trace(self, trace_id: str) -> list[Received]:
        with self.lock:
            return sorted((s for s in self.spans if s.trace_id == trace_id),
                          key=lambda s: s.start_ns)

    def named(self, name: str) -> list[Received]:
        with self.lock:
            return sorted((s for s in self.spans if s.name == name), key=lambda s: s.start_ns)

    @staticmethod
    def render(spans: list[Received]) -> str:
        """A trace as text, a span a line, indented under its parent, as Jaeger draws it."""
        by_id = {s.span_id: s for s in spans}
        children: dict[str | None, list[Received]] = {}
        for s in sorted(spans, key=lambda s: s.start_ns):
            parent = s.parent_id if s.parent_id in by_id else None
            children.setdefault(parent, []).append(s)
        start = min((s.start_ns for s in spans), default=0)
        lines: list[str] = []

        def walk(parent: str | None, depth: int) -> None:
            for s in children.get(parent, []):
                keys = ("jobq.attempt", "jobq.outcome", "jobq.worker", "http.response.status_code",
                        "jobq.requeued_by")
                shown = " ".join(f"{k.removeprefix('jobq.')}={s.attributes[k]}"
                                 for k in keys if k in s.attributes)
                lines.append(f"{(s.start_ns - start) / 1e6:9.1f} ms {(s.end_ns - s.start_ns) / 1e6:8.1f}"
                             f" ms  {'  ' * depth}{s.name} [{s.service}, {s.kind}]"
                             f"{' ERROR ' + s.status_message if s.failed else ''}"
                             f"{'  ' + shown if shown else ''}")
                walk(s.span_id, depth + 1)

        walk(None, 0)
        return "\n".join(lines)


def serve(receiver_port: int = 0) -> tuple[Receiver, ThreadingHTTPServer]:
    server = ThreadingHTTPServer(("127.0.0.1", receiver_port), BaseHTTPRequestHandler)
    receiver = Receiver(f"http://127.0.0.1:{server.server_address[1]}")

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
                ExportTraceServiceResponse,
            )

            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            if self.path != "/v1/traces":
                self.send_error(404)
                return
            if self.headers.get("Content-Encoding") == "gzip":
                body = gzip.decompress(body)
            receiver.take(body)
            reply = ExportTraceServiceResponse().SerializeToString()
            self.send_response(200)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", str(len(reply)))
            self.end_headers()
            self.wfile.write(reply)

        def log_message(self, *args: Any) -> None:
            pass

    server.RequestHandlerClass = Handler
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return receiver, server


@pytest.fixture
def otlp() -> Iterator[Receiver]:
    """A real OTLP/HTTP receiver on a free port: ``OTEL_EXPORTER_OTLP_ENDPOINT=otlp.url``."""
    receiver, server = serve()
    try:
        yield receiver
    finally:
        server.shutdown()
        server.server_close()


def reset_tracing() -> None:
    """This process back to untraced: jobq's decision forgotten, and OpenTelemetry's global
    provider unset (its API allows one per process; its own tests reset it the same way)."""
    from opentelemetry import trace
    from opentelemetry.util._once import Once

    from app.core import tracing

    tracing.shutdown()
    trace._TRACER_PROVIDER = None  # type: ignore[attr-defined]
    trace._TRACER_PROVIDER_SET_ONCE = Once()  # type: ignore[attr-defined]


@pytest.fixture
def traced(otlp: Receiver, configure) -> Iterator[Receiver]:
    """This process traces, exporting to the receiver (the in-thread worker's runs, the
    handlers' outside calls); untraced again at the end."""
    from app.core import tracing

    reset_tracing()
    configure(otlp_endpoint=otlp.url)
    assert tracing.setup() is not None
    try:
        yield otlp
    finally:
        reset_tracing()
