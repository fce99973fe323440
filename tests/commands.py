"""Running the ``jobq`` command as a user would, in a process of its own, and reading what it
printed."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.fixtures import ROOT

_SCRIPT = Path(sys.executable).with_name("jobq")
JOBQ = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "app.ops.cli"]


def jobq(*args: str, env: dict[str, str] | None = None, timeout: float = 60,
         replace_env: bool = False) -> subprocess.CompletedProcess:
    """Run ``jobq ARGS`` and return what it printed and its exit code."""
    base = {} if replace_env else dict(os.environ)
    full_env = {**base, "COLUMNS": "220", **(env or {})}
    return subprocess.run([*JOBQ, *args], capture_output=True, text=True, env=full_env,
                          timeout=timeout, cwd=ROOT)


def one_error_line(result: subprocess.CompletedProcess) -> str:
    """The error a refused command printed: exactly one line, starting with 'error:'."""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: "), result.stderr
    return lines[0]
