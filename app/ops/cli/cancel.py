"""`jobq cancel`: a pending job will not run; a running one is stopped and its work rolled back.

Audited: :mod:`app.store.jobstore` writes a ``cancelled`` event naming who did it
(``cli:user@host``); the run's end comes as a ``stopped`` event.
"""

from __future__ import annotations

from typing import Annotated

import typer
from rich.text import Text

from app.ops.cli import show
from app.ops.cli.args import actor
from app.ops.cli.common import console, fail
from app.ops.cli.lookup import find_job
from app.store import db

#: How long `jobq cancel` watches a running job's run for its end.
STOP_WAIT = 3.0


def register(app: typer.Typer) -> None:
    app.command("cancel")(cancel)


def cancel(
    job_id: Annotated[str, typer.Argument(metavar="ID", help="The job to cancel.")],
    reason: Annotated[str, typer.Option("--reason", "-r",
                                        help="Recorded as the job's error message.")] = "",
) -> None:
    """Cancel a pending or running job. A running one is stopped and its work rolled back.

    The run stops at its next Python step, within about a second on every pool; a call blocked
    in C code finishes first (a database statement; on a threads-pool worker also a long sleep).
    The command waits up to 3 s to see it stop and says what happened.
    """
    from app.intake.actions import cancel as cancel_job
    from app.intake.actions import run_stopped

    with db.engine().connect() as conn:
        job = find_job(conn, job_id)
    by = actor()
    was = cancel_job(job["id"], reason=reason or f"cancelled by {by}", by=by)
    if was is None:
        raise fail(f"job {job['id']} is {job['status']}: only pending or processing jobs can be "
                   "cancelled")
    line = Text(f"job {job['id']} cancelled (was {was})")
    if was != "processing":
        line.append("; it will not run", style="dim")
        console.print(line, soft_wrap=True)
        return
    stopped = run_stopped(job["id"], wait=STOP_WAIT)
    worker = (stopped and stopped.worker) or job["worker"] or "its worker"
    if stopped is None:
        line.append(f"; its run on {worker} has not stopped within {STOP_WAIT:.0f} s",
                    style="yellow")
        console.print(line, soft_wrap=True)
        console.print(Text(
            "It stops at its next Python step: a call blocked in C code finishes first (a "
            "database statement; on a threads-pool worker also a long sleep or network wait). "
            "Its uncommitted work is rolled back then and its outcome discarded; "
            f"`jobq job {job['id'][:8]}` shows a `stopped` event when it has ended (none "
            "comes if its worker process died: then nothing of the run was kept).",
            style="dim"))
        return
    # How long the run went, as its history's `stopped` event says it (not how soon after the
    # cancel it stopped): one figure for one run, wherever it is read.
    ran = f" after {show.duration(stopped.ran_seconds)}" if stopped.ran_seconds is not None else ""
    if stopped.interrupted:
        line.append(f"; its run on {worker} was interrupted{ran} and its work rolled back",
                    style="dim")
    else:
        line.append(f"; its run on {worker} finished first{ran}, before it could be stopped: "
                    "its work was rolled back and its result discarded", style="dim")
    console.print(line, soft_wrap=True)  # one line, for scripts and grep
