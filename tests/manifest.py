"""The production manifest plus intents only tests run, for processes started with
``JOBQ_MANIFEST=tests.manifest:INTENTS``. Production never lists a test intent."""

from __future__ import annotations

from app.core.manifest import Intent
from handlers.manifest import COMMANDS, SCHEDULES, SETTINGS  # noqa: F401  (the production ones)
from handlers.manifest import INTENTS as PRODUCTION

_EFFECT_PARAMS = "tests.intents:EffectParams"

INTENTS: tuple[Intent, ...] = (
    *PRODUCTION,
    # Child jobs asked for by a run (tests/integration/test_tracing.py): their traces.
    Intent("test.exec.fan_out", "tests.intents:fan_out", params="tests.intents:FanOutParams",
           description="Ask for child jobs of system.exec.echo."),
    # Side effects counted per job (tests/intents.py); retries to spare, since every fault
    # that catches a run costs it an attempt.
    Intent("test.exec.record_in_transaction", "tests.intents:record_in_transaction",
           params=_EFFECT_PARAMS, max_retries=6,
           description="Record a side effect in the run's transaction (effectively once)."),
    Intent("test.exec.record_outside", "tests.intents:record_outside",
           params=_EFFECT_PARAMS, max_retries=6,
           description="Record a side effect committed on its own (at least once)."),
    Intent("test.exec.record_in_transaction_bulk", "tests.intents:record_in_transaction",
           params=_EFFECT_PARAMS, max_retries=6, queue="bulk",
           description="test.exec.record_in_transaction on the bulk queue (slow work)."),
    # A database pool with no connection free (tests/integration/test_pool_timeout.py).
    Intent("test.exec.meet_a_full_pool", "tests.intents:meet_a_full_pool",
           params="tests.intents:PoolParams", max_retries=3,
           description="Time out waiting for a pooled connection, then complete."),
    # Cancelling a running job (tests/test_cancel.py): an uncommitted write, then a long sleep.
    Intent("test.exec.record_then_sleep", "tests.intents:record_then_sleep",
           params="tests.intents:SleepAfterParams", max_retries=0,
           description="Record a side effect in the run's transaction, then sleep."),
    # Time limits (tests/test_timelimit.py): the diagnostic sleep, limited to 2 s.
    Intent("test.exec.sleep_limited", "handlers.system.diagnostics:sleep",
           params="handlers.system.params:SleepParams", max_retries=0, time_limit=2,
           description="Sleep, but never longer than 2 s."),
    # A slow but healthy run (tests/acceptance/test_recovery.py): blocked in C, GIL held.
    Intent("test.exec.hold_the_gil", "tests.intents:hold_the_gil",
           params="tests.intents:HoldParams", max_retries=3,
           description="Block in one C call that holds the GIL."),
    # Tenant isolation and secrets (tests/security_intents.py): no retries, one run each.
    Intent("test.exec.snoop_other_tenant", "tests.security_intents:snoop_other_tenant",
           params="tests.security_intents:SnoopParams", max_retries=0,
           description="Read and write another tenant's rows every way a handler could."),
    Intent("test.exec.escape_tenant", "tests.security_intents:escape_tenant",
           params="tests.security_intents:EscapeParams", max_retries=0, time_limit=60,
           description="Try every way out of its tenant, and read and write another's."),
    Intent("test.exec.hold_session", "tests.security_intents:hold_session",
           params="tests.security_intents:HoldParams", max_retries=0,
           description="Hold the tenant's bound session open for a while."),
    Intent("test.exec.connect_with_password", "tests.security_intents:connect_with_password",
           params="tests.security_intents:LeakParams", max_retries=0,
           description="Fail to reach a database URL with a password, logging it first."),
    # Approvals (tests/acceptance/test_api.py): every job of it waits for a person first.
    Intent("test.exec.approved_echo", "handlers.system.diagnostics:echo",
           params="handlers.system.params:EchoParams", requires_approval=True,
           description="Echo its parameters, once someone approved it."),
    Intent("test.exec.use_secrets", "tests.security_intents:use_secrets",
           params="tests.security_intents:SecretParams", max_retries=0,
           secret_params=("card_number",),
           description="Echo a declared secret and a secret-looking one, or fail holding them."),
    Intent("test.exec.report_secrets", "tests.security_intents:report_secrets",
           params="tests.security_intents:SecretParams", max_retries=0,
           secret_params=("card_number",),
           description="Report progress naming a token, then echo the secrets back."),
)
