"""Several beats, one leader: beat's scheduler sends the caretaking tasks only while its beat
holds the leadership lock (a PostgreSQL advisory lock, app.store.liveness). The others follow,
trying for the lock every sweep interval; when the leader dies its session ends, the lock is
free, and the next follower to try leads: caretaking resumes within one interval.

Configured as Celery's ``beat_scheduler`` (celeryconfig), so every ``celery beat`` (and
``worker -B``) of jobq takes part. The caretaking tasks are safe to run twice (a leader whose
database connection broke may send for a moment beside the next one): leading keeps the work
from being done once per beat, not correctness.
"""

from __future__ import annotations

import logging
from typing import Any

from celery.beat import PersistentScheduler

from app.core.settings import settings
from app.store import liveness

log = logging.getLogger("jobq.beat")


class LeaderScheduler(PersistentScheduler):
    """Celery's persistent scheduler, sending only while this beat leads."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.leadership = liveness.SessionLock(liveness.LOCK_LEADER, retry_seconds=0)
        self.leading: bool | None = None
        super().__init__(*args, **kwargs)

    @property
    def follow_interval(self) -> float:
        """How often a follower tries to lead: within one sweep interval of the leader's end."""
        return min(float(self.max_interval), settings.sweep_interval)

    def tick(self, *args: Any, **kwargs: Any) -> float:
        leading = self.leadership.hold()
        if leading != self.leading:
            if leading:
                log.info("this beat leads: it sends the caretaking tasks")
            else:
                log.info("another beat leads; this one follows and takes over if it stops")
            self.leading = leading
        if not leading:
            return self.follow_interval
        return super().tick(*args, **kwargs)
