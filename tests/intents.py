"""Intents only tests and the soak run (listed in tests/manifest.py, never in production's):
each records its side effect once per run, so a test can count how often a job's effect
happened. The effect is written either in the run's own transaction, committed with its
``completed`` row (effectively once), or through the journal, committed on its own before the
run ends (at least once: a run killed after it repeats it)."""

from __future__ import annotations

import os
import time

from pydantic import Field
from sqlalchemy import text

from app.core.errors import PermanentError, TransientError
from app.core.manifest import IntentParams
from app.run.context import JobContext

#: The table the test intents write; created by whoever sets up the test database.
EFFECTS_DDL = """
CREATE TABLE IF NOT EXISTS test_side_effects (
    job_id uuid NOT NULL,
    tenant_id uuid NOT NULL,
    attempt int NOT NULL,
    pid int NOT NULL,
    committed_with text NOT NULL,
    at timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX IF NOT EXISTS ix_test_side_effects_job ON test_side_effects (job_id);
GRANT SELECT, INSERT ON test_side_effects TO PUBLIC;
"""

_RECORD = text(
    "INSERT INTO test_side_effects (job_id, tenant_id, attempt, pid, committed_with) "
    "VALUES (CAST(:job AS uuid), CAST(:tenant AS uuid), :attempt, :pid, :how)"
)


class EffectParams(IntentParams):
    seconds: float = Field(0.0, ge=0, le=60, description="How long the run takes.")
    transient_failures: int = Field(0, ge=0, le=20,
                                    description="Attempts that fail with a transient error first.")
    fail: bool = Field(False, description="Fail for good (a permanent error), recording nothing.")


def _misbehave(ctx: JobContext, params: EffectParams) -> None:
    if params.fail:
        raise PermanentError("asked to fail")
    if ctx.attempt <= params.transient_failures:
        raise TransientError(f"planned transient failure {ctx.attempt} of "
                             f"{params.transient_failures}")


def _record(conn, ctx: JobContext, how: str) -> None:
    conn.execute(_RECORD, {"job": ctx.job_id, "tenant": ctx.tenant_id, "attempt": ctx.attempt,
                           "pid": os.getpid(), "how": how})


def record_in_transaction(ctx: JobContext, params: EffectParams) -> dict:
    """Half the time, the effect in the run's transaction, the other half: a kill can land
    before the effect or between it and the commit; either way it is rolled back."""
    _misbehave(ctx, params)
    time.sleep(params.seconds / 2)
    _record(ctx.session, ctx, "transaction")
    time.sleep(params.seconds / 2)
    return {"attempt": ctx.attempt, "pid": os.getpid()}


def record_outside(ctx: JobContext, params: EffectParams) -> dict:
    """The effect committed on its own (like a message handed to a gateway), then the rest
    of the run; the handler writes nothing else, so its completion is batched."""
    _misbehave(ctx, params)
    time.sleep(params.seconds / 2)
    with ctx.journal() as conn:
        _record(conn, ctx, "journal")
    time.sleep(params.seconds / 2)
    return {"attempt": ctx.attempt, "pid": os.getpid()}


class SleepAfterParams(IntentParams):
    seconds: float = Field(30.0, ge=0, le=120, description="How long the run sleeps after its write.")
    step: float = Field(0.2, ge=0, le=120,
                        description="Seconds per time.sleep call; 0 sleeps in a single call.")


def record_then_sleep(ctx: JobContext, params: SleepAfterParams) -> dict:
    """The effect in the run's transaction, a progress report saying so, then a long sleep: in
    short Python steps, or in one call that blocks in C for the whole time (what a cancel on a
    threads pool cannot cut short)."""
    _record(ctx.session, ctx, "transaction")
    ctx.progress(0, params.seconds, "recorded", force=True)
    if params.step == 0:
        time.sleep(params.seconds)
    else:
        deadline = time.monotonic() + params.seconds
        while (left := deadline - time.monotonic()) > 0:
            time.sleep(min(left, params.step))
    return {"slept": params.seconds, "pid": os.getpid()}


class HoldParams(IntentParams):
    seconds: int = Field(8, ge=1, le=120, description="How long the call holds the GIL.")


def hold_the_gil(ctx: JobContext, params: HoldParams) -> dict:
    """One call into C that keeps the GIL for the whole time (libc's sleep through
    ``ctypes.PyDLL``): no other thread of the process runs meanwhile, the lease keeper's
    neither, so the run's lease lapses while its process is alive and well."""
    import ctypes

    ctypes.PyDLL(None).sleep(params.seconds)
    return {"held": params.seconds, "pid": os.getpid()}


class PoolParams(IntentParams):
    timeouts: int = Field(1, ge=0, le=5,
                          description="Attempts that meet a connection pool with none free.")


def meet_a_full_pool(ctx: JobContext, params: PoolParams) -> dict:
    """For its first ``timeouts`` attempts, ask a pool of one connection (SQLAlchemy's
    QueuePool, 0.2 s timeout) for a second while it holds the first, as a handler does when
    every connection of its process's pool is taken; then complete, saying which attempt did."""
    from sqlalchemy import create_engine

    from app.store import db

    if ctx.attempt <= params.timeouts:
        engine = create_engine(db.handler_engine().url, pool_size=1, max_overflow=0,
                               pool_timeout=0.2)
        try:
            with engine.connect(), engine.connect():
                pass
        finally:
            engine.dispose()
    return {"attempt": ctx.attempt}


class FanOutParams(IntentParams):
    children: int = Field(2, ge=1, le=100, description="How many child jobs.")


def fan_out(ctx: JobContext, params: FanOutParams) -> dict:
    ids = ctx.submit_children([{"intent_key": "system.exec.echo", "intent_params": {"n": i}}
                               for i in range(params.children)])
    return {"children": ids}
