"""One Celery task per manifest intent, named by its key; every one runs :class:`~app.run.runner.Run`.

Registering a key creates its task class only: the handler module is imported the first time
this process runs the intent, so start-up does not grow with the manifest.
"""

from __future__ import annotations

from typing import Any

from app.broker.celery_app import celery_app
from app.broker.messages import CheckedTask
from app.core.errors import IntentRefused
from app.core.manifest import Intent, Manifest
from app.core.redaction import redacted_call
from app.core.registry import manifest
from app.run.runner import HARD_LIMIT_GRACE, JobFailed, Run


class IntentTask(CheckedTask):
    """Base of every intent's task; ``intent`` is set per key at registration."""

    intent: Intent
    throws = (JobFailed, IntentRefused)  # expected: one log line each, no traceback
    typing = False
    ignore_result = True  # the outcome lives in job_executions
    acks_late = True
    reject_on_worker_lost = True

    def shown_arguments(self, args: Any, kwargs: Any) -> tuple[str, str] | None:
        # The engine's own messages carry only the tenant and job id, and a kwargsrepr with the
        # parameters redacted (app.broker.publish); a direct call carries parameters of its own.
        if not args and "intent_params" not in (kwargs or {}):
            return None
        return redacted_call(args, kwargs, self.intent.secret_params)


def register_intents(celery_app, manifest: Manifest) -> None:
    """One task per intent key, named by it; no handler module is imported here.

    Built the way ``@celery_app.task(base=IntentTask, bind=True)`` builds a task, minus what
    it repeats per task: every intent shares one body, so its argument checker is made once;
    the settings a task reads from the configuration are read once for all; and each task is
    bound once (by the app's finalize), not twice. Start-up then stays flat as the manifest
    grows (bench coldstart: 500 intents vs 10).
    """
    header = celery_app.type_checker(_intent_body, bound=True)
    conf = celery_app.conf
    configured = {attr: conf[name] for attr, name in IntentTask.from_config
                  if getattr(IntentTask, attr, None) is None}
    base = type("IntentTask", (IntentTask,), {"__module__": __name__, **configured})
    for intent in manifest:
        limit = intent.effective_time_limit
        task = type(intent.key, (base,), {
            "app": celery_app,
            "name": intent.key,
            "run": _intent_body,
            "_decorated": True,
            "_decorated_fun": staticmethod(_intent_body),
            "__doc__": intent.description or _intent_body.__doc__,
            "__module__": __name__,
            "__header__": header,
            "__wrapped__": _intent_body,
            "intent": intent,
            "queue": intent.queue,
            "soft_time_limit": limit,
            "time_limit": limit + HARD_LIMIT_GRACE,
        })()
        celery_app._tasks[task.name] = task
        if celery_app.finalized:  # registered late: finalize has bound the others already
            task.bind(celery_app)


def _intent_body(self, tenant_id=None, intent_params=None, job_id=None):
    """Every intent task's body. ``job_id`` is set on messages the engine sent for a row;
    without it, the task was called directly and the row is written here."""
    return Run(self).execute(tenant_id=tenant_id, intent_params=intent_params,
                             from_engine=job_id is not None)


register_intents(celery_app, manifest)
