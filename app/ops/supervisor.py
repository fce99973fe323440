"""``jobq run``'s process manager: honcho's output multiplexing, but a process that stops on
its own (a worker killed by the OOM killer, a crash) is started again after a backoff, with a
line saying so, instead of taking every other process down with it. Ctrl-C (SIGINT) or SIGTERM
stops everything: a warm shutdown, then SIGKILL after ``KILL_WAIT`` seconds.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import queue
import signal
import time
from typing import Any

from honcho import manager as honcho

#: The first restart waits this long; each quick death in a row doubles it, up to the cap.
FIRST_BACKOFF_SECONDS = 1.0
MAX_BACKOFF_SECONDS = 30.0
#: A process that ran this long before it stopped starts again after the first backoff.
STEADY_SECONDS = 60.0


def backoff(restarts_in_a_row: int) -> float:
    """Seconds before the ``n``-th restart in a row (0: the first)."""
    return min(MAX_BACKOFF_SECONDS, FIRST_BACKOFF_SECONDS * 2 ** restarts_in_a_row)


class Supervisor(honcho.Manager):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._restart_at: dict[str, float] = {}

    def loop(self) -> None:
        def _terminate(signum, _frame) -> None:
            self._system_print(f"{honcho.SIGNALS[signum]['name']} received\n")
            self.returncode = honcho.SIGNALS[signum]["rc"]
            self._restart_at.clear()
            self.terminate()

        signal.signal(signal.SIGTERM, _terminate)
        signal.signal(signal.SIGINT, _terminate)
        now = time.monotonic()
        for p in self._processes.values():
            p["started_at"], p["restarts"] = now, 0
        self._start()
        stopping_since: float | None = None
        while True:
            with contextlib.suppress(queue.Empty):
                self._handle(self.events.get(timeout=0.1))
            now = time.monotonic()
            for name, at in list(self._restart_at.items()):
                if at <= now and not self._terminating:
                    del self._restart_at[name]
                    self._restart(name)
            if self._terminating:
                stopping_since = stopping_since or now
                if self._all_stopped():
                    break
                if now - stopping_since > honcho.KILL_WAIT:
                    self.kill()

    def _handle(self, msg: Any) -> None:
        p = self._processes[msg.name]
        if msg.type == "line":
            self._printer.write(msg)
        elif msg.type == "start":
            p["pid"] = msg.data["pid"]
            self._system_print(f"{msg.name} started (pid={msg.data['pid']})\n")
            if self._terminating:  # restarted just as everything was asked to stop
                self._procmgr.terminate(p["pid"])
        elif msg.type == "stop":
            code = msg.data["returncode"]
            p["returncode"] = code
            if self._terminating:
                self._system_print(f"{msg.name} stopped (rc={code})\n")
                return
            ran = time.monotonic() - p["started_at"]
            if ran >= STEADY_SECONDS:
                p["restarts"] = 0
            wait = backoff(p["restarts"])
            p["restarts"] += 1
            self._restart_at[msg.name] = time.monotonic() + wait
            self._system_print(f"{msg.name} stopped on its own (rc={code}) after {ran:.0f} s; "
                               f"starting it again in {wait:.0f} s (restart {p['restarts']})\n")

    def _killall(self, force: bool = False) -> None:
        # A process being started again has no pid yet: it is stopped when it reports one.
        for name, p in self._processes.items():
            if "returncode" not in p and "pid" in p:
                self._system_print(f"sending {'SIGKILL' if force else 'SIGTERM'} to {name} "
                                   f"(pid {p['pid']})\n")
                (self._procmgr.kill if force else self._procmgr.terminate)(p["pid"])

    def _restart(self, name: str) -> None:
        p = self._processes[name]
        p.pop("pid", None)
        p.pop("returncode", None)
        p["started_at"] = time.monotonic()
        p["process"] = multiprocessing.Process(name=name, target=p["obj"].run,
                                               args=(self.events, True))
        p["process"].start()
