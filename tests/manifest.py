"""The production manifest plus intents only tests run, for processes started with
``JOBQ_MANIFEST=tests.manifest:INTENTS``. Production never lists a test intent."""

from __future__ import annotations

from app.manifest import Intent
from handlers.manifest import INTENTS as PRODUCTION

_EFFECT_PARAMS = "tests.intents:EffectParams"

INTENTS: tuple[Intent, ...] = (
    *PRODUCTION,
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
)
