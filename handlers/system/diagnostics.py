"""``system.exec.*``: echo, sleep and flaky, the engine's own diagnostic intents."""

from __future__ import annotations

import time

from app.handler_api import JobContext, TransientError
from handlers.system.params import EchoParams, FlakyParams, SleepParams


def echo(ctx: JobContext, params: EchoParams) -> dict:
    """Return the parameters as the result."""
    return params.model_dump(mode="json")


def sleep(ctx: JobContext, params: SleepParams) -> dict:
    """Sleep, reporting progress each second."""
    deadline = time.monotonic() + params.seconds
    while (left := deadline - time.monotonic()) > 0:
        ctx.progress(params.seconds - left, params.seconds)
        time.sleep(min(left, 1.0))
    return {"slept": params.seconds}


def flaky(ctx: JobContext, params: FlakyParams) -> dict:
    """Fail with a transient error ``failures`` times, then succeed."""
    if ctx.attempt <= params.failures:
        raise TransientError(f"flaky: planned failure {ctx.attempt} of {params.failures}")
    return {"attempts": ctx.attempt, "payload": params.payload}
