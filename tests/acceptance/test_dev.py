"""``./dev``, the newcomer's first command: as root, a clone the embedded PostgreSQL's user
(``nobody``) cannot reach is refused before anything is installed, in the words ``jobq run``
itself would use after the install."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from app.ops.embedded import EmbeddedError, EmbeddedPostgres
from tests.fixtures import ROOT

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the check is for root")


@pytest.fixture
def blocked_clone() -> Iterator[Path]:
    """A clone of ``./dev`` (and what it reads) inside a folder only root may enter, as
    ``/root`` is: ``/tmp/jobq-blocked-*/clone``, without a venv."""
    blocked = Path(tempfile.mkdtemp(prefix="jobq-blocked-"))
    blocked.chmod(0o700)
    clone = blocked / "clone"
    (clone / "app" / "ops").mkdir(parents=True)
    clone.chmod(0o755)
    for name in ("dev", "pyproject.toml", "app/ops/as_root.py"):
        shutil.copy2(ROOT / name, clone / name)
    yield clone
    shutil.rmtree(blocked, ignore_errors=True)


def _dev_run(clone: Path, **env: str) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items()
             if not k.startswith(("DATABASE_URL", "CELERY_", "JOBQ_"))}
    return subprocess.run(["bash", str(clone / "dev"), "run"], env={**clean, **env},
                          capture_output=True, text=True, timeout=60, cwd="/")


def test_dev_run_as_root_refuses_a_clone_nobody_can_enter_before_it_builds_the_venv(
        blocked_clone):
    started = time.monotonic()
    refused = _dev_run(blocked_clone)
    took = time.monotonic() - started

    assert refused.returncode == 1, refused.stdout + refused.stderr
    assert not (blocked_clone / ".venv").exists()
    assert "installing" not in refused.stderr
    assert took < 10
    # The same words as jobq run's own check, once it gets that far.
    with pytest.raises(EmbeddedError) as python_side:
        EmbeddedPostgres(blocked_clone / ".jobq" / "pg")._prepare()
    assert refused.stderr.strip() == f"error: {python_side.value}"
    assert f"cannot enter {blocked_clone.parent} (drwx------)" in refused.stderr


def _installed_venv(clone: Path) -> None:
    """A venv ``./dev`` takes as installed, whose ``jobq`` only says how it was called."""
    bin_ = clone / ".venv" / "bin"
    bin_.mkdir(parents=True)
    for name, body in (("python", "exit 0"), ("jobq", 'echo "jobq $*"')):
        (bin_ / name).write_text(f"#!/bin/sh\n{body}\n")
        (bin_ / name).chmod(0o755)
    stamp = clone / ".venv" / ".jobq-installed"
    stamp.touch()
    later = (clone / "pyproject.toml").stat().st_mtime + 10
    os.utime(stamp, (later, later))


def test_dev_run_skips_the_check_when_database_url_names_a_postgresql_of_ones_own(
        blocked_clone):
    _installed_venv(blocked_clone)
    ran = _dev_run(blocked_clone, DATABASE_URL="postgresql://postgres@db.example/jobq")
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.strip() == "jobq run"

    # Without it, the same clone is refused, even with the data folder somewhere reachable:
    # PostgreSQL's binaries would be in the venv, behind the blocked folder.
    home = Path(tempfile.mkdtemp(prefix="jobq-home-"))
    try:
        home.chmod(0o755)
        refused = _dev_run(blocked_clone, JOBQ_HOME=str(home / ".jobq"))
    finally:
        shutil.rmtree(home, ignore_errors=True)
    assert refused.returncode == 1
    assert refused.stdout == ""
    assert (f"cannot enter {blocked_clone.parent} (drwx------) on the way to PostgreSQL's "
            f"binaries ({blocked_clone}/.venv/lib/python") in refused.stderr
