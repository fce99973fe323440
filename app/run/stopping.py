"""Stopping a run whose job was cancelled or taken over, from outside the thread that runs it.

The lease keeper (:mod:`app.run.lease`) finds such runs; this module interrupts them with
:class:`RunStopped`. A run in its process's main thread (a solo worker, a prefork child) gets a
signal whose handler raises it, which also cuts a sleep or a socket wait short; a run in a
threads-pool thread gets it through ``PyThreadState_SetAsyncExc``, which lands at the thread's
next Python step, so a call blocked in C code (one long ``time.sleep``) finishes first. On both,
a database statement in progress finishes first. The exception is raised only while the handler
runs (:meth:`Stoppable.running`), never in the engine's or Celery's code around it, and never
inside a :meth:`Stoppable.shielded` section (a status write, a journal transaction): a stop that
comes there is raised as the section ends. Like a soft time limit, it can still land anywhere in
the handler's own Python code.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import threading
import time
from collections.abc import Iterator

#: Interrupts a main-thread run. A real-time signal: Celery, billiard and app.run.timelimit (SIGALRM)
#: leave these alone, and their default action never applies (the handler is in place first).
SIGNAL = signal.SIGRTMIN + 2 if hasattr(signal, "SIGRTMIN") else signal.SIGUSR2


class RunStopped(BaseException):
    """Raised in a run whose job is no longer its own. Not an :class:`Exception`, like
    ``KeyboardInterrupt``: a handler's ``except Exception`` does not swallow it."""

    def __init__(self, reason: str = "cancelled") -> None:
        super().__init__(reason)
        self.reason = reason


#: The run the main thread has inside its handler now (at most one per process).
_main_run: Stoppable | None = None


def _on_signal(signum, frame) -> None:
    run = _main_run
    if run is None or not run._inside or run.reason is None or run._shield or run._raised:
        return  # the run left its handler, or a shielded section raises it at its end
    run._raised = True
    raise RunStopped(run.reason)


_installed_in: int | None = None  # the pid whose main thread has the handler in place


def _install() -> None:
    global _installed_in
    if _installed_in != os.getpid():
        signal.signal(SIGNAL, _on_signal)
        _installed_in = os.getpid()


def _async_raise(thread_id: int, exc: type[BaseException] | None) -> None:
    """Make ``exc`` land in the thread at its next Python step; None takes back one not landed."""
    ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(thread_id),
                                               None if exc is None else ctypes.py_object(exc))


class Stoppable:
    """One run, as seen by the thread that may stop it. Made in the thread that runs it."""

    def __init__(self) -> None:
        self.thread_id = threading.get_ident()
        self.in_main_thread = threading.current_thread() is threading.main_thread()
        #: Why the run was asked to stop (``cancelled``, ``taken over``); None while it may run.
        self.reason: str | None = None
        #: When it was asked (``time.monotonic()``).
        self.requested_at: float | None = None
        self._inside = False
        self._shield = 0
        self._raised = False
        self._sent = False  # an exception put into the thread, perhaps not landed yet
        self._lock = threading.Lock()

    @contextlib.contextmanager
    def running(self) -> Iterator[None]:
        """The handler's call: the only place :meth:`stop` raises :class:`RunStopped`."""
        global _main_run
        previous = _main_run
        if self.in_main_thread:
            _install()
            _main_run = self
        self._inside = True
        try:
            yield
        finally:
            try:
                self._leave()
            finally:
                if self.in_main_thread:
                    _main_run = previous

    def _leave(self) -> None:
        with self._lock:
            self._inside = False
            if self._sent:
                _async_raise(self.thread_id, None)  # sent but not landed: it never will now

    @contextlib.contextmanager
    def shielded(self) -> Iterator[None]:
        """A section a stop must not cut in two: a stop asked before it raises at once, one
        asked during it raises at its end."""
        with self._lock:
            stopping = self._inside and self.reason is not None
            if stopping:
                self._raised = True
                if self._sent:
                    _async_raise(self.thread_id, None)  # raised here instead
            else:
                self._shield += 1
        if stopping:
            raise RunStopped(self.reason or "cancelled")
        try:
            yield
        finally:
            with self._lock:
                self._shield -= 1
                stopping = (not self._shield and self._inside and self.reason is not None
                            and not self._raised)
                if stopping:
                    self._raised = True
            if stopping:
                raise RunStopped(self.reason or "cancelled")

    def stop(self, reason: str) -> bool:
        """Ask the run to stop (from another thread); False when it had already been asked or
        is no longer in its handler."""
        with self._lock:
            if self.reason is not None or not self._inside:
                return False
            self.reason = reason
            self.requested_at = time.monotonic()
            if self._shield:
                return True
            if self.in_main_thread and signal.getsignal(SIGNAL) is _on_signal:
                signal.pthread_kill(self.thread_id, SIGNAL)
            else:  # a thread, or a main thread whose handler someone replaced
                self._raised = self._sent = True
                _async_raise(self.thread_id, RunStopped)
        return True
