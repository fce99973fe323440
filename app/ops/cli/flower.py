"""`jobq flower`: Flower on jobq's settings, and the rule that guards it.

Flower shows every intent's runs under its key and lets anyone who reaches it revoke tasks, so it
refuses to listen beyond this machine without basic auth (``FLOWER_BASIC_AUTH=user:password``).
``jobq run`` and docker-compose both start Flower through this command. Flower reads
``FLOWER_BASIC_AUTH`` from the environment itself, so the password never shows in ``ps``.
"""

from __future__ import annotations

import ipaddress
import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from app.ops.cli import console, fail

#: The task list's columns: ``result`` carries a running job's progress ("40% (2/5)").
TASK_COLUMNS = "name,uuid,state,result,received,started,runtime,worker"
#: Flower writes its state on a clean stop; this bounds what a crash loses (milliseconds).
STATE_SAVE_INTERVAL_MS = 60_000
STATE_FILE = "flower.db"


def register(app: typer.Typer) -> None:
    app.command("flower")(flower)


def is_loopback(address: str) -> bool:
    """True for addresses only this machine reaches; '' and 0.0.0.0 mean every interface."""
    if address == "localhost":
        return True
    try:
        return ipaddress.ip_address(address.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to anything


def exposure_problem(address: str, basic_auth: str | None) -> str | None:
    """Why Flower must not start on ``address`` with ``basic_auth``, or None when it may."""
    if basic_auth:
        for entry in basic_auth.split(","):
            user, sep, password = entry.partition(":")
            if not (sep and user.strip() and password):
                return ("FLOWER_BASIC_AUTH must be user:password (several separated by commas); "
                        "an entry has no user or no password")
        return None
    if not is_loopback(address):
        where = address or "every interface"
        return (f"Flower would listen on {where} without a password: set "
                "FLOWER_BASIC_AUTH=user:password, or FLOWER_ADDRESS=127.0.0.1 for this machine only")
    return None


def state_path(home: Path) -> Path:
    return home / STATE_FILE


def flower_argv(*, address: str, port: int, home: Path) -> list[str]:
    """The Flower command line: events from the workers, state kept in the data folder."""
    return [
        sys.executable, "-m", "celery", "-A", "app", "flower",
        f"--address={address}",
        f"--port={port}",
        "--persistent=True",
        f"--db={state_path(home)}",
        f"--state_save_interval={STATE_SAVE_INTERVAL_MS}",
        f"--tasks_columns={TASK_COLUMNS}",
    ]


def flower(
    address: Annotated[str | None, typer.Option(
        "--address", help="Listen here (default FLOWER_ADDRESS, 127.0.0.1).")] = None,
    port: Annotated[int | None, typer.Option(
        "--port", min=1, max=65535, help="Listen on this port (default FLOWER_PORT, 5555).")] = None,
    check: Annotated[bool, typer.Option(
        "--check", help="Only check the settings; exit 2 when Flower would be refused.")] = False,
) -> None:
    """Start Flower: live runs per intent, /metrics for Prometheus, state kept across restarts.

    Refuses (exit 2) to listen beyond localhost unless FLOWER_BASIC_AUTH is set.
    """
    from app.core.settings import child_environment, settings

    address = settings.flower_address if address is None else address
    port = settings.flower_port if port is None else port
    problem = exposure_problem(address, settings.flower_basic_auth)
    if problem:
        raise fail(problem, 2)
    settings.require_broker_url()
    if check:
        console.print(f"Flower may listen on {address}:{port}"
                      + (" with basic auth" if settings.flower_basic_auth else " (this machine only)"))
        return
    settings.home.mkdir(parents=True, exist_ok=True)
    if settings.flower_basic_auth:
        env = child_environment(unset=("FLOWER_UNAUTHENTICATED_API",))
    else:
        # This machine only (checked above): the API, which the pages' buttons use too, is as
        # open as the pages. Flower 2 otherwise answers every /api call 401 without a password;
        # and a FLOWER_BASIC_AUTH set but empty would make it want a login.
        env = child_environment({"FLOWER_UNAUTHENTICATED_API": "true"},
                                unset=("FLOWER_BASIC_AUTH",))
    argv = flower_argv(address=address, port=port, home=settings.home)
    sys.stdout.flush()
    # Replace this process, so signals (Ctrl-C, docker stop) reach Flower and it saves its state.
    os.execve(argv[0], argv, env)
