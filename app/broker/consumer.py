"""The worker's consumer, with its task events sent in batches (``worker_consumer`` in
celeryconfig): Celery's own consumer otherwise.

With ``-E`` (Flower), a worker buffers its task events (received, started, succeeded, ...) and
sends what it holds on the event loop's next round, one ``PUBLISH`` to Redis each time. At a
few hundred jobs a second that is about one publish per job: the biggest single cost of the
worker's consuming process (41% of its time in a py-spy profile of a 5,000-job drain, more than
taking the messages and acknowledging them together). Here the first event buffered starts a
short timer instead, and everything buffered until it fires goes out in one publish: Flower sees
a job's events up to :data:`EVENT_BATCH_SECONDS` later, in the same order. A full buffer (Celery's
``buffer_limit``) is still sent at once, and what is buffered when the consumer shuts down is sent
before its connection closes.
"""

from __future__ import annotations

import contextlib
import time
from typing import Any

from celery.worker.consumer import Consumer as CeleryConsumer

#: How long a buffered task event may wait for others to go out with it.
EVENT_BATCH_SECONDS = 0.05


#: A batch whose timer has not fired after this long is scheduled again (a timer dropped by a
#: reconnection must not leave the events waiting for a full buffer).
EVENT_BATCH_STALE = 1.0


class Consumer(CeleryConsumer):
    #: When the pending batch's timer was set (monotonic), 0.0 when none is.
    _event_batch_since = 0.0

    def on_send_event_buffered(self) -> None:
        hub: Any = self.hub
        if not hub:
            return
        now = time.monotonic()
        if now - self._event_batch_since < EVENT_BATCH_STALE:
            return
        self._event_batch_since = now
        hub.call_later(EVENT_BATCH_SECONDS, self._send_event_batch)

    def _send_event_batch(self) -> None:
        self._event_batch_since = 0.0
        self._flush_events()

    def shutdown(self) -> None:
        with contextlib.suppress(Exception):  # events are a courtesy to Flower
            self._flush_events()
        super().shutdown()
