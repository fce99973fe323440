"""How `jobq run` (and `jobq demo`) tell a person to call jobq from another terminal: as it
can be called there, computed, not assumed to be on PATH."""

from __future__ import annotations

import sys
from pathlib import Path

from app.ops.cli.run import jobq_command

VENV_JOBQ = Path(sys.executable).with_name("jobq")
PROJECT = VENV_JOBQ.parent.parent.parent


def test_jobq_on_path_is_called_by_its_name():
    assert jobq_command(PROJECT, f"/usr/bin:{VENV_JOBQ.parent}") == "jobq"


def test_jobq_not_on_path_is_called_by_its_path_relative_to_the_project_folder():
    assert jobq_command(PROJECT, "/usr/local/bin:/usr/bin:/bin") == ".venv/bin/jobq"


def test_from_another_folder_the_path_is_whole(tmp_path):
    assert jobq_command(tmp_path, "/usr/bin:/bin") == str(VENV_JOBQ.absolute())


def test_another_jobq_first_on_path_is_not_taken_for_this_one(tmp_path):
    other = tmp_path / "jobq"
    other.write_text("#!/bin/sh\necho another jobq\n")
    other.chmod(0o755)
    assert jobq_command(PROJECT, f"{tmp_path}:{VENV_JOBQ.parent}") == ".venv/bin/jobq"
