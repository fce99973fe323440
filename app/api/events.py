"""A job's live events as Server-Sent Events: ``state`` whenever its status or progress changes,
``history`` for each new event of its history (the SSE id is the event's, so a client that
reconnects with Last-Event-ID misses none), and ``end`` once it has ended. The table is polled
every :data:`POLL_SECONDS` on a tenant-bound connection, from a thread. Results, progress and
details show redacted.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

from fastapi import Request
from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool

from app.api import schemas
from app.store import db, reads
from app.store.models import FINISHED_STATUSES

POLL_SECONDS = 0.25
#: A comment line this often keeps proxies from closing a quiet stream.
KEEPALIVE_SECONDS = 15.0
_STATE = ("status", "progress", "retry_count", "max_retries", "error_message", "result",
          "executed_at", "completed_at", "worker")


def _frame(kind: str, data: Any, event_id: int | None = None) -> str:
    head = f"id: {event_id}\n" if event_id is not None else ""
    body = json.dumps(data, default=_json_value, ensure_ascii=False)
    return f"{head}event: {kind}\ndata: {body}\n\n"


def _json_value(value: Any) -> Any:
    return value.isoformat() if hasattr(value, "isoformat") else str(value)


def _poll(tenant_id: str, job_id: str, after: int) -> tuple[dict[str, Any] | None, list]:
    with db.tenant_begin(tenant_id) as conn:
        row = reads.watch_job(conn, job_id)
        history = reads.job_events(conn, job_id, after=after) if row else []
    return row, history


def stream(request: Request, tenant_id: str, job_id: str, *, after: int = 0) -> StreamingResponse:
    return StreamingResponse(_events(request, tenant_id, job_id, after),
                             media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


async def _events(request: Request, tenant_id: str, job_id: str,
                  after: int) -> AsyncIterator[str]:
    last_state: dict[str, Any] | None = None
    quiet = 0.0
    while True:
        row, history = await run_in_threadpool(_poll, tenant_id, job_id, after)
        if row is None:  # deleted by retention meanwhile
            yield _frame("end", {"id": job_id, "status": None})
            return
        secret = schemas.secret_fields(row["intent_key"])
        for event in history:
            after = max(after, event["id"])
            yield _frame("history", schemas.event_out(
                {k: event[k] for k in ("id", "at", "attempt", "kind", "worker", "error",
                                       "detail")}, secret), event["id"])
            quiet = 0.0
        state = {"id": job_id, **schemas.state_out({k: row[k] for k in _STATE}, secret)}
        if state != last_state:
            yield _frame("state", state)
            last_state = state
            quiet = 0.0
        if row["status"] in FINISHED_STATUSES:
            yield _frame("end", {"id": job_id, "status": row["status"]})
            return
        if await request.is_disconnected():
            return
        await asyncio.sleep(POLL_SECONDS)
        quiet += POLL_SECONDS
        if quiet >= KEEPALIVE_SECONDS:
            yield ": keep-alive\n\n"
            quiet = 0.0
