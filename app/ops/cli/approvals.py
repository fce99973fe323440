"""`jobq approve` and `jobq reject`: decide on a job awaiting approval, audited as the CLI's user
(``cli:user@host``), as the API does for its callers."""

from __future__ import annotations

from typing import Annotated

import typer

from app.ops.cli.args import actor
from app.ops.cli.common import console, fail
from app.ops.cli.lookup import find_job
from app.store import db


def register(app: typer.Typer) -> None:
    app.command("approve")(approve)
    app.command("reject")(reject)


def approve(
    job_id: Annotated[str, typer.Argument(metavar="ID", help="The job awaiting approval.")],
    note: Annotated[str | None, typer.Option("--note", help="Kept in its history.")] = None,
) -> None:
    """Approve a job awaiting approval: it becomes pending and runs."""
    from app.intake.actions import approve as approve_job

    with db.engine().connect() as conn:
        job = find_job(conn, job_id)
    if approve_job(job["id"], by=actor(), note=note) is None:
        raise fail(f"job {job['id']} is {job['status']}, not awaiting approval")
    console.print(f"job {job['id']} approved; it is pending and runs now", soft_wrap=True)


def reject(
    job_id: Annotated[str, typer.Argument(metavar="ID", help="The job awaiting approval.")],
    reason: Annotated[str | None, typer.Option("--reason", "-r",
                                               help="Recorded as its error message.")] = None,
) -> None:
    """Reject a job awaiting approval: it is cancelled and never runs."""
    from app.intake.actions import reject as reject_job

    with db.engine().connect() as conn:
        job = find_job(conn, job_id)
    by = actor()
    if not reject_job(job["id"], by=by, reason=reason or f"rejected by {by}"):
        raise fail(f"job {job['id']} is {job['status']}, not awaiting approval")
    console.print(f"job {job['id']} rejected; it will not run", soft_wrap=True)
