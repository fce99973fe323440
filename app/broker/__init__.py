"""The broker side, leaf modules only: the Celery application object (no tasks of its own), the
check that refuses malformed messages, the kombu patch for Redis restarts, jobq's own Redis keys,
and handing a job's message to the broker."""
