"""Every Celery task jobq declares, and the worker's signal hooks. Celery imports this package
through the app's ``include`` setting when a worker starts; importing it registers one task per
manifest intent (no handler module is imported), ``dispatch_intent``, ``jobq.cancel_job`` and
beat's caretaking tasks; and beat's dispatch pump."""

import gc

# These imports (the store, SQLAlchemy) build objects that live as long as the process: the
# cyclic collections they would set off find nothing to free, and cost a worker's start ~10%
# of the import, before its first job. Collection resumes once they are done.
_collecting = gc.isenabled()
gc.disable()
try:
    from app.tasks import dispatch, intents, maintenance, pumping, signals  # noqa: F401
finally:
    if _collecting:
        gc.enable()
