"""``jobq run``'s process manager: honcho's process handling, but each process writes to a log
file of its own (``$JOBQ_HOME/logs/NAME.log``) instead of one interleaved stream, and a process
that stops on its own (a worker killed by the OOM killer, a crash) is started again after a
backoff instead of taking every other process down with it; the terminal gets one line saying
so and the end of that process's log. Ctrl-C (SIGINT) or SIGTERM stops everything: a warm
shutdown, then SIGKILL after ``KILL_WAIT`` seconds. What the supervisor itself did (starts with
their pids, signals, exit codes) goes to ``logs/supervisor.log``.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import multiprocessing
import queue
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from honcho import manager as honcho
from honcho.process import Popen, Process

#: The first restart waits this long; each quick death in a row doubles it, up to the cap.
FIRST_BACKOFF_SECONDS = 1.0
MAX_BACKOFF_SECONDS = 30.0
#: A process that ran this long before it stopped starts again after the first backoff.
STEADY_SECONDS = 60.0
#: Lines of a dead process's log shown in the terminal.
TAIL_LINES = 12
#: Each start of a process writes this line into its log first; the tail shown after a death
#: begins after the last one, so it is that run's own output.
START_MARK = "--- jobq run started"


def _now() -> str:
    """The time as jobq's logs write it: in the academies' zone, with its offset."""
    from zoneinfo import ZoneInfo

    from app.core.settings import settings

    return f"{dt.datetime.now(ZoneInfo(settings.timezone)):%Y-%m-%d %H:%M:%S%z}"


def shown_path(path: Path) -> str:
    """``path`` relative to where jobq runs when inside it (``.jobq/logs``), else whole."""
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def backoff(restarts_in_a_row: int) -> float:
    """Seconds before the ``n``-th restart in a row (0: the first)."""
    return min(MAX_BACKOFF_SECONDS, FIRST_BACKOFF_SECONDS * 2 ** restarts_in_a_row)


def tail(log: Path, lines: int = TAIL_LINES) -> list[str]:
    """The last ``lines`` lines ``log`` got since its process last started."""
    try:
        with open(log, "rb") as f:
            f.seek(0, 2)
            f.seek(max(0, f.tell() - 64 * 1024))
            text = f.read().decode(errors="replace")
    except OSError:
        return []
    found = text.splitlines()
    marks = [i for i, line in enumerate(found) if line.startswith(START_MARK)]
    if marks:
        found = found[marks[-1] + 1:]
    return [line for line in found if line.strip()][-lines:]


def keep_previous(log: Path) -> None:
    """A new ``jobq run`` starts its logs afresh; the previous run's stay as ``NAME.log.1``."""
    with contextlib.suppress(FileNotFoundError):
        log.replace(log.with_name(log.name + ".1"))


class LoggedProcess(Process):
    """A honcho process whose output goes straight to its log file (the kernel writes it; no
    line passes through this process), appended across restarts."""

    def __init__(self, *args: Any, log: Path, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.log = log

    def run(self, events=None, ignore_signals=False) -> None:
        self._events = events
        with open(self.log, "ab") as out:
            out.write(f"{START_MARK} {self.name} at {_now()} ---\n".encode())
            out.flush()
            self._child = Popen(self.cmd, env=self.env, cwd=self.cwd, stdout=out,
                                stderr=subprocess.STDOUT)
        self._send_message({"pid": self._child.pid}, type="start")
        if ignore_signals:  # the child stops when the supervisor signals its process group
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
        self._child.wait()
        self._send_message({"returncode": self._child.returncode}, type="stop")


class Supervisor(honcho.Manager):
    """``say`` prints a line in the terminal: what a person watching ``jobq run`` needs to know
    (a process that died, the stop); everything else goes to the log files in ``log_dir``."""

    def __init__(self, log_dir: Path, say: Callable[[str, str], None]) -> None:
        super().__init__()
        self.log_dir = log_dir
        self._say = say
        log_dir.mkdir(parents=True, exist_ok=True)
        self.own_log = log_dir / "supervisor.log"
        keep_previous(self.own_log)
        self._restart_at: dict[str, float] = {}

    def add_process(self, name: str, cmd: str, env: dict[str, str] | None = None) -> Path:
        """Add a process; returns its log file."""
        log = self.log_dir / f"{name}.log"
        keep_previous(log)
        self._processes[name] = {"obj": LoggedProcess(cmd, name=name, env=env, log=log)}
        return log

    @property
    def names(self) -> list[str]:
        return list(self._processes)

    def log_of(self, name: str) -> Path:
        return self._processes[name]["obj"].log

    def pids(self) -> dict[str, int]:
        """The processes running now, by name."""
        return {name: p["pid"] for name, p in self._processes.items()
                if "pid" in p and "returncode" not in p}

    def _system_print(self, data: str) -> None:
        with open(self.own_log, "a") as out:
            out.write(f"{_now()} {data}")

    def loop(self) -> None:
        def _terminate(signum, _frame) -> None:
            self._system_print(f"{honcho.SIGNALS[signum]['name']} received\n")
            if not self._terminating:
                self._say(f"{honcho.SIGNALS[signum]['name']} received: stopping everything "
                          f"(at most {honcho.KILL_WAIT} s) ...", "")
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
        killed = False
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
                if now - stopping_since > honcho.KILL_WAIT and not killed:
                    left = [n for n, p in self._processes.items() if "returncode" not in p]
                    self._say(f"{', '.join(left)} still running after {honcho.KILL_WAIT} s: "
                              "killing (SIGKILL)", "yellow")
                    self.kill()
                    killed = True

    def _handle(self, msg: Any) -> None:
        p = self._processes[msg.name]
        if msg.type == "start":
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
            line = (f"{msg.name} stopped on its own (rc={code}) after {ran:.0f} s; starting it "
                    f"again in {wait:.0f} s (restart {p['restarts']})")
            self._system_print(line + "\n")
            log = shown_path(p["obj"].log)
            if p["restarts"] == 1:  # the first death in a row: what it said last
                last = tail(p["obj"].log)
                self._say(f"{line}; the end of its log, {log}:" if last
                          else f"{line}; its log, {log}, is empty", "red")
                for said in last:
                    self._say(f"  | {said}", "dim")
            else:
                self._say(f"{line}; see {log}", "red")

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
