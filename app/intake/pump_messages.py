"""The dispatch pump's messages: kombu's envelope around Celery's protocol-2 body, read into
what the pump needs (app.intake.pump)."""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field
from typing import Any

from app.broker.messages import message_problem
from app.core.errors import IntentRefused
from app.core.validation import Request


@dataclass
class Taken:
    """One message the pump holds."""

    raw: str
    tag: str = ""
    task_id: str = ""
    headers: dict[str, Any] = field(default_factory=dict)
    args: Any = ()
    kwargs: Any = None
    #: Why workers run it instead (malformed, callbacks), or None.
    for_workers: str | None = None
    request: Request | None = None
    outcome: str | IntentRefused | None = None
    started: float = 0.0


def decode(raw: str) -> Taken:
    """A message as the queue holds it: kombu's envelope around Celery's protocol-2 body."""
    taken = Taken(raw)
    try:
        envelope = json.loads(raw)
        taken.tag = envelope["properties"]["delivery_tag"]
        taken.headers = headers = envelope.get("headers") or {}
        body = envelope["body"]
        if envelope.get("properties", {}).get("body_encoding") == "base64":
            body = base64.b64decode(body)
        if envelope.get("content-type") != "application/json":
            taken.for_workers = f"content type {envelope.get('content-type')!r}"
            return taken
        payload = json.loads(body)
    except Exception as exc:
        taken.for_workers = f"unreadable: {exc}"
        return taken
    problem = message_problem(headers, payload)
    if problem is not None:
        taken.for_workers = problem
        return taken
    args, kwargs, embed = payload
    if embed and any(embed.get(k) for k in ("callbacks", "errbacks", "chain", "chord")):
        taken.for_workers = "it has callbacks"
        return taken
    taken.task_id, taken.args, taken.kwargs = headers["id"], args, kwargs
    return taken
