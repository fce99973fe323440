"""A run as spans of its job's trace (app.core.tracing): the wait before it, and the attempt.

Both hang under the span that asked for the job (the traceparent its row keeps), so every
attempt, a retry hours later or one on corrected parameters, joins the request's trace. The wait
runs from when the job became due (created, or its ``run_at``: a schedule, a retry's backoff, a
requeue) to this claim, by the database's clock; the attempt is the current span while the
handler runs, so its child jobs and outside calls are its children. Tracing off, :func:`attempt`
gives :data:`NO_ATTEMPT` and nothing else happens.
"""

from __future__ import annotations

import contextlib
import datetime as dt
from collections.abc import Iterable, Iterator
from contextlib import AbstractContextManager
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from app.core import retry, tracing
from app.store.jobstore import Claimed, Released


class Attempt:
    """What a run tells its attempt span: how it ended."""

    def __init__(self, span: tracing.Span = tracing.NO_SPAN):
        self.span = span
        self.outcome: str | None = None

    def ended(self, outcome: str, error: str | None = None, *,
              stacktrace: str | None = None) -> None:
        """``outcome``: completed, retry, waiting, failed or stopped (with ``error``: why)."""
        self.outcome = outcome
        self.span.set({"jobq.outcome": outcome})
        if error is None:
            return
        if outcome in ("stopped", "waiting"):  # not a failure: cancelled, or waits its turn
            self.span.set({f"jobq.{outcome}": error})
        else:
            self.span.fail(error, stacktrace=stacktrace)


    def decided(self, decision: retry.RetryDecision, error: str, *,
                stacktrace: str | None = None) -> None:
        """A failed attempt, as :mod:`app.core.retry` decided: retried, waiting, or failed."""
        self.ended("waiting" if decision.waiting else "retry" if decision.retry else "failed",
                   error, stacktrace=stacktrace)


NO_ATTEMPT = Attempt()


def lost(runs: Iterable[Released]) -> None:
    """Attempts whose process died, as their spans: from their start to now, failed ``lost``
    (the process that ran them never ended them, so nothing else would show them)."""
    if not tracing.enabled():
        return
    now = dt.datetime.now(dt.UTC)
    for r in runs:
        if r.started_at is not None:
            tracing.record(f"run {r.intent_key}", start=r.started_at, end=now, kind="consumer",
                           parent=r.traceparent, job_id=r.id, error=r.error, attributes={
                               "jobq.job_id": r.id, "jobq.intent": r.intent_key,
                               "jobq.academy.id": r.tenant_id, "jobq.attempt": r.attempt,
                               "jobq.worker": r.worker, "jobq.outcome": "lost"})


#: What :func:`attempt` is while tracing is off: a block that does nothing.
NO_ATTEMPT_BLOCK = contextlib.nullcontext(NO_ATTEMPT)


def attempt(c: Claimed, *, queue: str, worker: str) -> AbstractContextManager[Attempt]:
    """The attempt span around the run of ``c`` (and the wait span before it)."""
    return _attempt(c, queue, worker) if tracing.enabled() else NO_ATTEMPT_BLOCK


@contextlib.contextmanager
def _attempt(c: Claimed, queue: str, worker: str) -> Iterator[Attempt]:
    about = {"jobq.job_id": c.id, "jobq.intent": c.intent_key, "jobq.queue": queue,
             "jobq.academy.id": c.tenant_id, "jobq.academy.name": c.tenant_name,
             "jobq.attempt": c.attempt}
    # Without a traceparent (tracing was off where it was asked for, or plain SQL) the job's
    # spans still make one trace: the job's id is its trace id.
    job_id = c.id
    if c.due_at is not None and c.started_at is not None:
        tracing.record(f"wait {c.intent_key}", start=c.due_at, end=c.started_at,
                       parent=c.traceparent, job_id=job_id, attributes=about)
    with tracing.span(f"run {c.intent_key}", kind="consumer", parent=c.traceparent,
                      job_id=job_id, attributes={**about, "jobq.worker": worker,
                                                 "jobq.max_retries": c.max_retries},
                      record_errors=False) as span:
        run = Attempt(span)
        try:
            yield run
        except BaseException as exc:
            if run.outcome is None:  # not an outcome the run wrote: the engine's own error
                run.ended("failed", tracing.redact(str(exc)) or type(exc).__name__)
            raise
        if run.outcome is None:
            run.ended("completed")


class OutsideCall:
    """A handler's call to an outside service, as its span sees it: the headers to send with
    it (the W3C ``traceparent``, so the other side can join the trace) and what it answered."""

    def __init__(self, span: tracing.Span = tracing.NO_SPAN):
        self.span = span
        #: Empty while tracing is off (the same object every call then: never write to it).
        self.headers: dict[str, str] = {}

    def answered(self, status: int) -> None:
        """The HTTP status the other side answered."""
        self.span.set({"http.response.status_code": status})


NO_CALL_BLOCK = contextlib.nullcontext(OutsideCall())


def outside_call(service: str, operation: str, *, url: str | None = None,
                 attributes: dict[str, Any] | None = None) -> AbstractContextManager[OutsideCall]:
    """A client span ``"{service} {operation}"`` around a call to an outside service (``kakao``,
    ``sms``, ``email``, ``payment-gateway``) made while a job runs: a child of the attempt. An
    error leaving the block (TransientError, PermanentError) marks it failed. Tracing off: no
    span, and ``headers`` stays empty."""
    if not tracing.enabled():
        return NO_CALL_BLOCK
    return _outside_call(service, operation, url, attributes)


@contextlib.contextmanager
def _outside_call(service: str, operation: str, url: str | None,
                  attributes: dict[str, Any] | None) -> Iterator[OutsideCall]:
    about: dict[str, Any] = {"jobq.outside.service": service, **(attributes or {})}
    if url is not None:
        # Never the credentials or the query a URL may carry.
        parts = urlsplit(url)
        host = parts.netloc.rpartition("@")[2]
        about.update({"url.full": urlunsplit(parts._replace(netloc=host, query="", fragment="")),
                      "server.address": parts.hostname, "server.port": parts.port,
                      "http.request.method": operation})
    with tracing.span(f"{service} {operation}", kind="client", attributes=about) as span:
        call = OutsideCall(span)
        tracing.inject(call.headers)
        yield call
