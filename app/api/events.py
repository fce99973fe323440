"""A job's live events as Server-Sent Events: ``state`` whenever its status or progress changes,
``history`` for each new event of its history (the SSE id is the event's, so a client that
reconnects with Last-Event-ID misses none), and ``end`` once it has ended.

A stream that ends before its job does says why in a last ``close`` event: ``lifetime`` (open
``JOBQ_API_STREAM_MAX_SECONDS``: reconnect), ``expired`` (the token did), ``revoked`` (the key
was) or ``tenant`` (suspended). The process's one watcher (app.api.watcher) reads the jobs; a
stream only waits for what it hands over. Results, progress and details show redacted.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator
from typing import Any

from fastapi.responses import StreamingResponse
from starlette.background import BackgroundTask

from app.api import schemas, streamslots
from app.api.auth import Caller, Denied
from app.api.watcher import Watch, watcher
from app.core.settings import settings
from app.store import db, tenants
from app.store.models import FINISHED_STATUSES

#: A comment line this often keeps proxies from closing a quiet stream.
KEEPALIVE_SECONDS = 15.0
_STATE = ("status", "progress", "retry_count", "max_retries", "error_message", "result",
          "executed_at", "completed_at", "worker")
_HISTORY = ("id", "at", "attempt", "kind", "worker", "error", "detail")
#: Whether a client should open the stream again after each ``close`` reason.
RECONNECT = {"lifetime": True, "expired": False, "revoked": False, "tenant": False}


def _frame(kind: str, data: Any, event_id: int | None = None) -> str:
    head = f"id: {event_id}\n" if event_id is not None else ""
    body = json.dumps(data, default=_json_value, ensure_ascii=False)
    return f"{head}event: {kind}\ndata: {body}\n\n"


def _json_value(value: Any) -> Any:
    return value.isoformat() if hasattr(value, "isoformat") else str(value)


def open_stream(who: Caller, job: dict[str, Any], *, after: int) -> StreamingResponse:
    """The stream of ``job`` (found among the caller's tenant's jobs): refused while the
    tenant is not active (403), and over the caller's or the tenant's cap of open streams (429).
    Blocking: run it in a thread."""
    tenant = job["tenant_id"]
    with db.engine().connect() as conn:
        status = tenants.status_of(conn, tenant)
    if status != "active":
        raise Denied(403, f"the tenant is {status or 'gone'}: its live event streams are closed "
                          "(its jobs can still be read)")
    try:
        slot = streamslots.take(who.limit_key, tenant, per_key=settings.api_streams_per_key,
                                per_tenant=settings.api_streams_per_tenant)
    except streamslots.Full as full:
        if full.which == "key":
            raise Denied(429, f"this {'key' if who.key_id else 'token subject'} already has "
                              f"{full.cap} open event streams, its cap "
                              "(JOBQ_API_STREAMS_PER_KEY): close one first") from None
        raise Denied(429, f"this tenant already has {full.cap} open event streams, its cap "
                          "(JOBQ_API_STREAMS_PER_TENANT): close one first") from None
    watch = Watch(job["id"], tenant, after, key_id=who.key_id, slot=slot)
    # The slot is freed as the stream ends; should the stream never start, after the response.
    return StreamingResponse(
        _events(watch, schemas.secret_fields(job["intent_key"]),
                settings.api_stream_max_seconds, who.expires_at),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        background=BackgroundTask(_release, slot))


def _release(slot: streamslots.Slot) -> None:
    with contextlib.suppress(Exception):  # its lease runs out by itself
        streamslots.release(slot)


async def _events(watch: Watch, secret: tuple[str, ...], max_seconds: float,
                  expires_at: float | None) -> AsyncIterator[str]:
    deadline = time.monotonic() + max_seconds
    token_left = None if expires_at is None else expires_at - time.time()
    token_deadline = None if token_left is None else time.monotonic() + token_left
    watching = watcher()
    watching.subscribe(watch)
    wrote = time.monotonic()
    try:
        while True:
            now = time.monotonic()
            ends = min(deadline, token_deadline or deadline)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(watch.changed.wait(),
                                       max(0.0, min(ends, wrote + KEEPALIVE_SECONDS) - now))
            events, state = watch.take()
            for event in events:
                yield _frame("history", schemas.event_out(
                    {k: event[k] for k in _HISTORY}, secret), event["id"])
                wrote = time.monotonic()
            if watch.gone:  # deleted by retention meanwhile
                yield _frame("end", {"id": watch.job_id, "status": None})
                return
            if state is not None:
                yield _frame("state", {"id": watch.job_id,
                                       **schemas.state_out({k: state[k] for k in _STATE}, secret)})
                wrote = time.monotonic()
                if state["status"] in FINISHED_STATUSES:
                    yield _frame("end", {"id": watch.job_id, "status": state["status"]})
                    return
            now = time.monotonic()
            closing = watch.closing
            if closing is None and token_deadline is not None and now >= token_deadline:
                closing = ("expired", "the token of this stream expired")
            if closing is None and now >= deadline:
                closing = ("lifetime", f"event streams stay open {max_seconds:g} s at most: "
                                       "open it again with Last-Event-ID to go on")
            if closing is not None:
                reason, message = closing
                yield _frame("close", {"id": watch.job_id, "reason": reason,
                                       "reconnect": RECONNECT[reason], "message": message})
                return
            if now - wrote >= KEEPALIVE_SECONDS:
                yield ": keep-alive\n\n"
                wrote = now
    finally:
        watching.unsubscribe(watch)
