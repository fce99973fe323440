"""jobq: intents as Celery tasks, every run mirrored into PostgreSQL.

``celery -A app worker`` finds the Celery application here. Callers use::

    from app import dispatch_intent, submit
    dispatch_intent.delay(tenant_id=..., intent_key="system.exec.echo", intent_params={...})
"""

from app.celery_app import celery_app as celery
from app.dispatch import cancel, dispatch_intent, job_id_for, submit, submit_many
from app.errors import IntentRefused, PermanentError, TenantRefused, TransientError

__all__ = [
    "IntentRefused",
    "PermanentError",
    "TenantRefused",
    "TransientError",
    "cancel",
    "celery",
    "dispatch_intent",
    "job_id_for",
    "submit",
    "submit_many",
]
