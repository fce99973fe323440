"""Whether what ``jobq run`` started is up: every worker answers a ping over the broker, beat's
caretaking runs (a sweep noted since the start, so beat sends and a worker takes), and Flower and
the API answer over HTTP. ``jobq run`` prints its summary once all of them do, so what it says
last is true: the command it prints works now.
"""

from __future__ import annotations

import contextlib
import functools
import threading
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field

#: Seconds between two looks at what is not up yet.
LOOK_EVERY = 0.5


def local_address(address: str) -> str:
    """Where this machine reaches a server listening on ``address`` (every interface: loopback)."""
    if address in ("", "0.0.0.0"):
        return "127.0.0.1"
    if address in ("::", "[::]"):
        return "[::1]"
    return f"[{address}]" if ":" in address and not address.startswith("[") else address


def answers(url: str) -> bool:
    """``url`` answers 200 within a second."""
    try:
        with urllib.request.urlopen(url, timeout=1.0) as response:
            return response.status == 200
    except (OSError, ValueError):
        return False


@dataclass
class Probe:
    """Something that must be up: a name for people and how to tell."""

    name: str
    #: One look: True once it is up (it is not asked again).
    check: Callable[[], bool]


@dataclass
class WorkerPings:
    """The workers, by node name (``realtime@host``) -> the process that runs it; one ping over
    the broker asks every one that has not answered yet."""

    nodes: dict[str, str]
    answered: set[str] = field(default_factory=set)

    def probes(self) -> list[Probe]:
        return [Probe(process, functools.partial(self._answered, node))
                for node, process in self.nodes.items()]

    def _answered(self, node: str) -> bool:
        if node not in self.answered:
            self._ping()
        return node in self.answered

    def _ping(self) -> None:
        from app.broker.celery_app import celery_app

        missing = [n for n in self.nodes if n not in self.answered]
        with contextlib.suppress(Exception):  # a broker that does not answer yet: not up yet
            for reply in celery_app.control.ping(destination=missing, timeout=1.0):
                self.answered.update(reply)


def beat_sweeps(since: float) -> Probe:
    """Beat is up once a sweep it sent has run (noted in Redis) after ``since``."""
    def swept() -> bool:
        from app.beat.caretaking import caretaker_notes

        try:
            note = caretaker_notes().get("sweep_due_jobs") or {}
        except Exception:
            return False
        return note.get("last_at", 0) >= since

    return Probe("beat", swept)


def wait_until_up(probes: list[Probe], *, stop: threading.Event, patience: float,
                  slow: Callable[[list[str]], None]) -> bool:
    """Look until every probe says up (True), or ``stop`` is set (False). Once, after
    ``patience`` seconds, ``slow`` gets the names of those still not up."""
    waiting = list(probes)
    deadline: float | None = time.monotonic() + patience
    while not stop.is_set():
        waiting = [p for p in waiting if not p.check()]
        if not waiting:
            return True
        if deadline is not None and time.monotonic() > deadline:
            slow([p.name for p in waiting])
            deadline = None
        stop.wait(LOOK_EVERY)
    return False
