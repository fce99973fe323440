"""One trace per job, with OpenTelemetry: the one door to its spans, shut unless asked for.

Tracing is on in a process when ``OTEL_EXPORTER_OTLP_ENDPOINT`` (or ``…_TRACES_ENDPOINT``) is
set: :func:`setup` installs the SDK's tracer provider with a batch exporter over OTLP/HTTP, both
configured by the standard ``OTEL_*`` variables (service name, sampler, headers, batching),
unless the process installed a provider of its own (then that one is used). Off, nothing of
OpenTelemetry is imported and each helper here returns after one global read.

A job keeps the W3C ``traceparent`` of the span that asked for it (``job_executions.traceparent``),
so its wait, its attempts and its handler's outside calls join the request's trace however much
later they run. A job asked for without one traces under its own id: its UUID is its trace id.
Like the log lines (app.core.logs) this module only shapes what is sent; the SDK's exporter
thread sends it.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import threading
import uuid
from collections.abc import Iterator, Mapping
from contextlib import AbstractContextManager
from contextvars import ContextVar
from typing import Any

from app.core.redaction import redact
from app.core.settings import settings

#: The tracer's name (the instrumentation scope) on every span jobq makes.
SCOPE = "jobq"
#: ``service.name`` when neither OTEL_SERVICE_NAME nor OTEL_RESOURCE_ATTRIBUTES names one.
DEFAULT_SERVICE = "jobq"
TRACEPARENT = "traceparent"

_lock = threading.Lock()
_decided = False
_tracer: Any = None
#: The tracer provider :func:`setup` installed (None: tracing off, or the process's own).
_installed: Any = None
#: OpenTelemetry's modules, imported by :func:`setup` once tracing is on.
_otel: Any = None
#: The trace id a span started with no parent gets: a job's own (see :func:`span`).
_trace_id: ContextVar[int | None] = ContextVar("jobq_trace_id", default=None)


def tracer() -> Any:
    """The tracer, or None while tracing is off (decided once, at the first call)."""
    return _tracer if _decided else setup()


def enabled() -> bool:
    return tracer() is not None


def setup() -> Any:
    """Decide once whether this process traces, and make it ready; the tracer or None.

    Long-running processes (workers, beat, ``jobq api``) call it as they start, so the first
    job pays no import; anything else decides at its first span."""
    global _decided, _tracer, _otel
    with _lock:
        if _decided:
            return _tracer
        if settings.tracing_enabled:
            _otel = _import()
            _tracer = _provider().get_tracer(SCOPE)
        _decided = True
        return _tracer


def flush(timeout_seconds: float = 5.0) -> None:
    """Send the spans made so far now, not at the exporter's next batch."""
    if _tracer is not None:
        with contextlib.suppress(Exception):
            _otel.trace.get_tracer_provider().force_flush(int(timeout_seconds * 1000))


def shutdown() -> None:
    """Send what is left and forget the decision (a process that ends; the tests). A provider
    the process installed itself is flushed, and left to it. With the collector unreachable the
    exporter gives up after OTEL_EXPORTER_OTLP_TIMEOUT (10 s): those spans are lost."""
    global _decided, _tracer, _installed
    with _lock:
        with contextlib.suppress(Exception):
            if _installed is not None:
                _installed.shutdown()  # which sends what its batch holds
            elif _tracer is not None:
                _otel.trace.get_tracer_provider().force_flush()
        _decided, _tracer, _installed = False, None, None


def _import() -> Any:
    import types

    from opentelemetry import context, trace
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
    from opentelemetry.trace.status import Status, StatusCode

    return types.SimpleNamespace(trace=trace, context=context, Status=Status,
                                 StatusCode=StatusCode,
                                 propagator=TraceContextTextMapPropagator())


def _provider() -> Any:
    """The process's tracer provider: its own when it installed one, else ours, installed."""
    global _installed
    from opentelemetry import trace

    current = trace.get_tracer_provider()
    if not isinstance(current, trace.ProxyTracerProvider):
        return current
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor
    from opentelemetry.sdk.trace.id_generator import RandomIdGenerator

    class JobTraceIds(RandomIdGenerator):
        """Random ids, but a job's own UUID as the trace id of its spans without a parent."""

        def generate_trace_id(self) -> int:
            return _trace_id.get() or super().generate_trace_id()

        def is_trace_id_random(self) -> bool:
            return _trace_id.get() is None

    resource = Resource.create()  # OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES
    if str(resource.attributes.get(SERVICE_NAME, "")).startswith("unknown_service"):
        resource = resource.merge(Resource({SERVICE_NAME: DEFAULT_SERVICE}))
    # The sampler (OTEL_TRACES_SAMPLER), the exporter's headers, timeout and compression and
    # the batching (OTEL_BSP_*) are read by the SDK from their standard variables.
    provider = TracerProvider(resource=resource, id_generator=JobTraceIds())
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=traces_url())))
    trace.set_tracer_provider(provider)
    _installed = provider
    return provider


def traces_url() -> str | None:
    """Where spans are sent: the traces endpoint as given, else the endpoint's ``/v1/traces``
    (as OpenTelemetry's specification says to build it)."""
    if settings.otlp_traces_endpoint:
        return settings.otlp_traces_endpoint
    if settings.otlp_endpoint:
        return settings.otlp_endpoint.rstrip("/") + "/v1/traces"
    return None


def trace_id_of(traceparent: str | None) -> str | None:
    """The trace id (32 hex digits) a stored traceparent names, or None."""
    parts = traceparent.split("-") if traceparent else []
    return parts[1] if len(parts) == 4 and len(parts[1]) == 32 else None


def trace_link(traceparent: str | None) -> str | None:
    """Where the job's trace is shown (JOBQ_TRACE_URL, ``{trace_id}`` filled in), or None."""
    trace_id = trace_id_of(traceparent)
    if trace_id is None or not settings.trace_url:
        return None
    return settings.trace_url.replace("{trace_id}", trace_id)


# --- spans ------------------------------------------------------------------------------------


class Span:
    """A span jobq made (or, tracing off, :data:`NO_SPAN`, which does nothing)."""

    def __init__(self, span: Any = None):
        self._span = span

    def set(self, attributes: Mapping[str, Any]) -> None:
        """Set attributes (those that are None are left out)."""
        if self._span is not None:
            self._span.set_attributes({k: v for k, v in attributes.items() if v is not None})

    def fail(self, error: str, *, kind: str | None = None, stacktrace: str | None = None) -> None:
        """Mark it failed with ``error`` (as the job's history says it, secrets redacted)."""
        if self._span is None:
            return
        event = {"exception.message": error}
        if kind:
            event["exception.type"] = kind
        if stacktrace:
            event["exception.stacktrace"] = stacktrace
        self._span.add_event("exception", event)
        self._span.set_status(_otel.Status(_otel.StatusCode.ERROR, error[:500]))

    @property
    def traceparent(self) -> str | None:
        if self._span is None:
            return None
        carrier: dict[str, str] = {}
        _otel.propagator.inject(carrier, _otel.trace.set_span_in_context(self._span))
        return carrier.get(TRACEPARENT)

    def end(self, at: dt.datetime | None = None) -> None:
        if self._span is not None:
            self._span.end(end_time=_ns(at))


NO_SPAN = Span()
#: What :func:`span` is while tracing is off: a block that does nothing.
NO_SPAN_BLOCK = contextlib.nullcontext(NO_SPAN)


def _ns(at: dt.datetime | None) -> int | None:
    return None if at is None else int(at.timestamp() * 1_000_000_000)


def context_of(traceparent: str | None) -> Any:
    """The context a stored or received ``traceparent`` names, or None (none, or malformed)."""
    if not traceparent or tracer() is None:
        return None
    found = _otel.propagator.extract({TRACEPARENT: traceparent})
    return found if _otel.trace.get_current_span(found).get_span_context().is_valid else None


def current_traceparent() -> str | None:
    """The traceparent of the span running now in this thread, or None."""
    if tracer() is None:
        return None
    carrier: dict[str, str] = {}
    _otel.propagator.inject(carrier)
    return carrier.get(TRACEPARENT)


def inject(headers: dict[str, Any]) -> None:
    """Add the current span's ``traceparent`` to ``headers`` (an outgoing call, a message)."""
    if tracer() is not None:
        _otel.propagator.inject(headers)


_CURRENT = object()


def span(name: str, *, kind: str = "internal", parent: Any = _CURRENT, job_id: str | None = None,
         links: tuple[str | None, ...] = (), start: dt.datetime | None = None,
         current: bool = True, attributes: Mapping[str, Any] | None = None,
         record_errors: bool = True) -> AbstractContextManager[Span]:
    """A span around the block, the current span within it unless ``current`` is false.

    ``parent``: a traceparent (None: none, a root) instead of the current span; with a
    ``job_id``, a root (no parent, or a malformed one) gets the job's id as its trace id. ``links``: traceparents it relates to (the
    request that retried a job). ``kind``: internal, server, client, producer or consumer.
    An exception leaving the block marks it failed (unless ``record_errors`` is false), naming
    only the exception's type and its message, redacted. Tracing off: :data:`NO_SPAN_BLOCK`,
    for the cost of a function call.
    """
    found = tracer()
    if found is None:
        return NO_SPAN_BLOCK
    return _span(found, name, kind=kind, parent=parent, job_id=job_id, links=links, start=start,
                 current=current, attributes=attributes, record_errors=record_errors)


@contextlib.contextmanager
def _span(found: Any, name: str, *, kind: str, parent: Any, job_id: str | None,
          links: tuple[str | None, ...], start: dt.datetime | None, current: bool,
          attributes: Mapping[str, Any] | None, record_errors: bool) -> Iterator[Span]:
    made = _start(found, name, kind=kind, parent=parent, job_id=job_id, links=links,
                  start=start, attributes=attributes)
    token = _otel.context.attach(_otel.trace.set_span_in_context(made)) if current else None
    try:
        yield Span(made)
    except BaseException as exc:
        if record_errors:
            Span(made).fail(redact(str(exc)[:1000]) or "", kind=type(exc).__name__)
        raise
    finally:
        if token is not None:
            _otel.context.detach(token)
        made.end()


def event(name: str, attributes: Mapping[str, Any]) -> None:
    """An event of the span running now (a run's wait for a channel), if any; nested mappings
    are flattened (``by_reason.rate``)."""
    if tracer() is None:
        return
    flat: dict[str, Any] = {}
    for key, value in attributes.items():
        if isinstance(value, Mapping):
            flat.update({f"{key}.{k}": v for k, v in value.items()})
        elif value is not None:
            flat[key] = value
    _otel.trace.get_current_span().add_event(name, flat)


def start_span(name: str, *, kind: str = "internal", parent: Any = _CURRENT,
               job_id: str | None = None, links: tuple[str | None, ...] = (),
               start: dt.datetime | None = None,
               attributes: Mapping[str, Any] | None = None) -> Span:
    """:func:`span` without the block: the caller ends it (never the current span)."""
    found = tracer()
    if found is None:
        return NO_SPAN
    return Span(_start(found, name, kind=kind, parent=parent, job_id=job_id, links=links,
                       start=start, attributes=attributes))


def record(name: str, *, start: dt.datetime, end: dt.datetime, parent: Any = _CURRENT,
           job_id: str | None = None, kind: str = "internal", error: str | None = None,
           attributes: Mapping[str, Any] | None = None) -> None:
    """A span that already happened (a job's wait, by the database's clock; a lost attempt,
    failed with ``error``)."""
    found = tracer()
    if found is not None:
        made = Span(_start(found, name, kind=kind, parent=parent, job_id=job_id, start=start,
                           attributes=attributes))
        if error is not None:
            made.fail(error)
        made.end(max(start, end))


def _start(found: Any, name: str, *, kind: str, parent: Any, job_id: str | None,
           links: tuple[str | None, ...] = (), start: dt.datetime | None = None,
           attributes: Mapping[str, Any] | None = None) -> Any:
    trace = _otel.trace
    context = None if parent is _CURRENT else (context_of(parent) or _otel.context.Context())
    linked = [trace.Link(trace.get_current_span(c).get_span_context())
              for c in map(context_of, links) if c is not None]
    forced = None
    if job_id is not None and not trace.get_current_span(context).get_span_context().is_valid:
        forced = _trace_id.set(uuid.UUID(job_id).int)
    try:
        return found.start_span(
            name, context=context, kind=getattr(trace.SpanKind, kind.upper()),
            attributes={k: v for k, v in (attributes or {}).items() if v is not None},
            links=linked, start_time=_ns(start), record_exception=False,
            set_status_on_exception=False)
    finally:
        if forced is not None:
            _trace_id.reset(forced)
