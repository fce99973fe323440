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


class ParamsNotKept(IntentRefused):
    """A retry without new parameters of a job refused with parameters that could not be
    stored (too big, not JSON): it would run on the intent's defaults instead of what its
    caller asked for, so it runs only on new ones. ``job_id`` is that job."""


class JobNotFound(JobqError, LookupError):
    """No job has that id."""
