"""jobq: intents as Celery tasks, every run mirrored into PostgreSQL.

``celery -A app worker`` finds the Celery application here. Callers use::

    from app import dispatch_intent, submit
    dispatch_intent.delay(tenant_id=..., intent_key="system.exec.echo", intent_params={...})

The names below load on first use, so ``import app.core.settings`` (or ``app.ops.embedded``) does not
build the Celery application.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "celery": ("app.broker.celery_app", "celery_app"),
    "celery_app": ("app.broker.celery_app", "celery_app"),
    "dispatch_intent": ("app.tasks.dispatch", "dispatch_intent"),
    "submit": ("app.intake.submit", "submit"),
    "submit_many": ("app.intake.submit", "submit_many"),
    "Request": ("app.core.validation", "Request"),
    "cancel": ("app.intake.actions", "cancel"),
    "run_stopped": ("app.intake.actions", "run_stopped"),
    "approve": ("app.intake.actions", "approve"),
    "reject": ("app.intake.actions", "reject"),
    "job_id_for": ("app.core.validation", "job_id_for"),
    "IntentRefused": ("app.core.errors", "IntentRefused"),
    "TenantRefused": ("app.core.errors", "TenantRefused"),
    "TransientError": ("app.core.errors", "TransientError"),
    "PermanentError": ("app.core.errors", "PermanentError"),
}

__all__ = sorted(_EXPORTS)

#: The names that talk to the broker. Without one configured (and no running `jobq run` to
#: find), Celery would quietly fall back to AMQP on localhost and fail later in a long kombu
#: traceback: these stop at once, saying which setting to set.
_NEEDS_BROKER = frozenset({"celery", "celery_app", "dispatch_intent", "submit", "submit_many",
                           "cancel", "approve", "reject"})


def __getattr__(name: str) -> Any:
    try:
        module, attr = _EXPORTS[name]
    except KeyError:
        raise AttributeError(f"module 'app' has no attribute {name!r}") from None
    if name in _NEEDS_BROKER:
        from app.core.settings import settings

        settings.require_broker_url()
    value = getattr(importlib.import_module(module), attr)
    globals()[name] = value
    return value
