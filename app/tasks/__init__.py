"""Every Celery task jobq declares, and the worker's signal hooks. Celery imports this package
through the app's ``include`` setting when a worker starts; importing it registers one task per
manifest intent (no handler module is imported), ``dispatch_intent``, ``jobq.cancel_job`` and
beat's caretaking tasks; and beat's dispatch pump."""

from app.tasks import dispatch, intents, maintenance, pumping, signals  # noqa: F401
