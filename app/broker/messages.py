"""Task messages as they come off the broker: a malformed one is refused before Celery reads it,
and arguments that may hold secrets are shown redacted.

Celery's default strategy unpacks a message body without checking its shape, and an error
there escapes its consumer as an "unrecoverable error" that stops the whole worker: one bad
message on a queue (a JSON object where the protocol wants ``[args, kwargs, embed]``) would
take every worker down with it. Here such a message is an :class:`InvalidTaskError`, which
Celery logs and discards while the worker keeps serving.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from celery import Task
from celery.exceptions import InvalidTaskError
from celery.worker.strategy import default as default_strategy


def message_problem(headers: dict[str, Any] | None, payload: Any) -> str | None:
    """What is wrong with a task message's shape, or None when Celery can read it."""
    headers = headers or {}
    if "task" in headers:  # protocol 2: the id in the headers, the body [args, kwargs, embed]
        task_id = headers.get("id")
        if isinstance(payload, dict) and "args" in payload:  # a protocol-1 body under v2 headers
            args, kwargs = payload.get("args"), payload.get("kwargs", {})
        elif isinstance(payload, list | tuple) and len(payload) == 3:
            args, kwargs, embed = payload
            if not (embed is None or isinstance(embed, dict)):
                return f"its embed is a {type(embed).__name__}, not an object"
        else:
            return ("its body is not [args, kwargs, embed] but a "
                    f"{type(payload).__name__}" + (f" of {len(payload)}" if isinstance(
                        payload, list | tuple) else ""))
    else:  # protocol 1: everything in the body
        if not isinstance(payload, dict):
            return f"its body is a {type(payload).__name__}, not an object"
        task_id, args, kwargs = payload.get("id"), payload.get("args", ()), payload.get("kwargs", {})
    if not isinstance(task_id, str) or not task_id:
        return f"its task id is {task_id!r:.60}, not a string"
    if not isinstance(args, list | tuple):
        return f"its args are a {type(args).__name__}, not a list"
    if not isinstance(kwargs, dict):
        return f"its kwargs are a {type(kwargs).__name__}, not an object"
    return None


def checked_strategy(task: Task, app: Any, consumer: Any, **options: Any) -> Callable[..., Any]:
    """Celery's default strategy, behind a check of each message's shape."""
    handle = default_strategy(task, app, consumer, **options)

    def task_message_handler(message, body, ack, reject, callbacks, **kwargs):
        # ``message.payload`` decodes the body; a decode error or a refused content type
        # (pickle) raises here as it would in Celery, and the consumer discards the message.
        payload = body if body is not None else message.payload
        problem = message_problem(message.headers, payload)
        if problem is not None:
            raise InvalidTaskError(f"malformed message for task {task.name!r}: {problem}")
        if body is None and isinstance(payload, list | tuple):
            # What the worker tells Flower (task-received) and its logs is ours, not whatever
            # repr of the arguments the sending client put in the headers.
            shown = task.shown_arguments(payload[0], payload[1])
            if shown is not None:
                message.headers["argsrepr"], message.headers["kwargsrepr"] = shown
        return handle(message, body, ack, reject, callbacks, **kwargs)

    return task_message_handler


class CheckedTask(Task):
    """Base of every jobq task: its messages are checked before Celery reads them."""

    Strategy = "app.broker.messages:checked_strategy"

    def shown_arguments(self, args: Any, kwargs: Any) -> tuple[str, str] | None:
        """``(argsrepr, kwargsrepr)`` with secrets redacted, or None to keep the message's."""
        return None
