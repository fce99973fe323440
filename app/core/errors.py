"""The exceptions callers and handlers see.

A handler raises :class:`TransientError` for "try again later" and anything else for "this
will not work"; the engine maps a few well-known library errors (connection errors,
timeouts, HTTP 5xx) to transient on its own (see :mod:`app.core.retry`).
"""

from __future__ import annotations


class JobqError(Exception):
    """Base of jobq's own errors."""


class TransientError(JobqError):
    """The work may succeed if tried again later; the job is retried with backoff."""

    def __init__(self, message: str = "", *, retry_after: float | None = None):
        super().__init__(message)
        #: Seconds to wait at least, when the other side said so (HTTP Retry-After).
        self.retry_after = retry_after


class WaitingError(TransientError):
    """The work waits for something outside the job (an academy's daily quota on a channel,
    a broadcast's chunks) and runs again after ``retry_after`` seconds. A wait is not a
    failure: it does not use up a retry, and its reason is in the job's history once."""

    def __init__(self, message: str, *, retry_after: float):
        super().__init__(message, retry_after=retry_after)


class PermanentError(JobqError):
    """The work cannot succeed as asked; the job fails at once, without retries."""


class IntentRefused(JobqError, ValueError):
    """A dispatch was refused: bad input, named precisely. Never retried.

    ``job_id`` is the failed audit row written for it, or ``None`` where no row can exist
    (unknown or suspended tenant).
    """

    def __init__(self, message: str, *, field: str | None = None, job_id: str | None = None):
        super().__init__(message)
        self.field = field
        self.job_id = job_id

    def __reduce__(self):
        # Keep the message intact through Celery's JSON exception transport.
        return (type(self), (str(self),), {"field": self.field, "job_id": self.job_id})


class TenantRefused(IntentRefused):
    """The tenant is unknown or suspended."""


class IdempotencyConflict(IntentRefused):
    """The idempotency key already names a job of this tenant that asked for something else
    (another intent, other parameters, another ``run_at``). Nothing was written; ``job_id`` is
    the job the key names, and ``key`` the key."""

    def __init__(self, message: str, *, field: str | None = "idempotency_key",
                 job_id: str | None = None, key: str | None = None):
        super().__init__(message, field=field, job_id=job_id)
        self.key = key

    @classmethod
    def of(cls, key: str, job_id: str) -> IdempotencyConflict:
        return cls(cls.telling("idempotency key", key, job_id), job_id=job_id, key=key)

    @staticmethod
    def telling(name: str, key: str | None, job_id: str | None) -> str:
        """The conflict, with the key called as the caller's interface calls it (the API's
        ``Idempotency-Key`` header, the CLI's ``--idempotency-key``)."""
        return (f"{name} {key!r} was already used for a different request (job {job_id}): "
                "a repeat asks for the same intent_key, intent_params and run_at; a new request "
                "needs a new key")

    def __reduce__(self):
        return (type(self), (str(self),),
                {"field": self.field, "job_id": self.job_id, "key": self.key})


class ParamsNotKept(IntentRefused):
    """A retry without new parameters of a job refused with parameters that could not be
    stored (too big, not JSON): it would run on the intent's defaults instead of what its
    caller asked for, so it runs only on new ones. ``job_id`` is that job."""
