"""Stopping a run from another thread (app/run/stopping.py), on real threads and signals: where the
stop lands, and where it must not."""

from __future__ import annotations

import os
import signal
import threading
import time
from typing import Any

import pytest

from app.run.stopping import SIGNAL, RunStopped, Stoppable


def in_thread(body) -> tuple[threading.Thread, dict[str, Any]]:
    """Run ``body(outcome)`` in a thread of its own; ``outcome`` collects what it saw."""
    outcome: dict[str, Any] = {}

    def main() -> None:
        try:
            body(outcome)
        except BaseException as exc:
            outcome["escaped"] = exc

    thread = threading.Thread(target=main, daemon=True)
    thread.start()
    return thread, outcome


def spin(seconds: float) -> int:
    """Python steps for ``seconds``: where an exception from outside can land."""
    steps, deadline = 0, time.monotonic() + seconds
    while time.monotonic() < deadline:
        steps += 1
    return steps


def test_a_thread_run_is_stopped_at_its_next_python_step():
    ready = threading.Event()

    def body(outcome):
        outcome["run"] = run = Stoppable()
        with pytest.raises(RunStopped) as stopped, run.running():
            ready.set()
            spin(10)
        outcome["stopped_at"] = time.monotonic()
        outcome["reason"] = stopped.value.reason

    thread, outcome = in_thread(body)
    ready.wait(5)
    asked = time.monotonic()
    assert outcome["run"].stop("cancelled") is True
    thread.join(5)
    assert "escaped" not in outcome
    assert outcome["stopped_at"] - asked < 0.5
    assert outcome["run"].reason == "cancelled"


def test_a_stop_asked_after_the_handler_returned_never_lands():
    left = threading.Event()
    go_on = threading.Event()

    def body(outcome):
        outcome["run"] = run = Stoppable()
        with run.running():
            spin(0.01)
        left.set()
        go_on.wait(5)
        outcome["steps after"] = spin(0.5)  # the engine's and Celery's code after the handler

    thread, outcome = in_thread(body)
    left.wait(5)
    assert outcome["run"].stop("cancelled") is False
    go_on.set()
    thread.join(5)
    assert "escaped" not in outcome and outcome["steps after"] > 0


def test_a_stop_sent_while_the_thread_is_blocked_in_c_lands_when_it_returns_even_at_the_end():
    blocked = threading.Event()

    def body(outcome):
        outcome["run"] = run = Stoppable()
        try:
            with run.running():
                blocked.set()
                time.sleep(0.5)  # one C call: the stop waits for it; the handler returns next
        except RunStopped:
            outcome["raised at its end"] = True
        outcome["steps after"] = spin(0.5)

    thread, outcome = in_thread(body)
    blocked.wait(5)
    outcome["run"].stop("cancelled")
    thread.join(5)
    assert "escaped" not in outcome
    assert outcome.get("raised at its end") and outcome["steps after"] > 0


def test_a_stop_during_a_shielded_section_waits_for_its_end():
    inside = threading.Event()
    asked = threading.Event()

    def body(outcome):
        outcome["run"] = run = Stoppable()
        done = []
        with pytest.raises(RunStopped), run.running():
            with run.shielded():
                inside.set()
                asked.wait(5)
                spin(0.2)
                done.append("the shielded write")
            outcome["after the section"] = True
        outcome["done"] = done

    thread, outcome = in_thread(body)
    inside.wait(5)
    outcome["run"].stop("taken over")
    asked.set()
    thread.join(5)
    assert "escaped" not in outcome
    assert outcome["done"] == ["the shielded write"]
    assert "after the section" not in outcome


def test_a_handler_that_swallows_the_stop_gets_it_again_at_its_next_shielded_call():
    inside = threading.Event()
    asked = threading.Event()

    def body(outcome):
        outcome["run"] = run = Stoppable()
        with run.running():
            try:
                with run.shielded():  # a progress report
                    inside.set()
                    asked.wait(5)
            except RunStopped:
                outcome["swallowed"] = True  # a handler's bare except
            try:
                with run.shielded():  # its next progress report
                    outcome["started the next section"] = True
            except RunStopped:
                outcome["refused"] = True

    thread, outcome = in_thread(body)
    inside.wait(5)
    outcome["run"].stop("cancelled")
    asked.set()
    thread.join(5)
    assert "escaped" not in outcome
    assert outcome.get("swallowed") and outcome.get("refused")
    assert "started the next section" not in outcome


def test_a_main_thread_run_is_stopped_even_inside_one_long_sleep():
    run = Stoppable()
    timer = threading.Timer(0.2, run.stop, args=("cancelled",))
    started = time.monotonic()
    timer.start()
    with pytest.raises(RunStopped), run.running():
        time.sleep(10)
    assert time.monotonic() - started < 1.0
    assert run.reason == "cancelled"


def test_the_stop_signal_outside_a_run_does_nothing():
    run = Stoppable()
    with run.running():
        pass
    assert run.stop("cancelled") is False
    os.kill(os.getpid(), SIGNAL)  # a stray one, after the run: handled, ignored
    assert spin(0.2) > 0
    assert signal.getsignal(SIGNAL) is not signal.SIG_DFL
