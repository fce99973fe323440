"""`jobq dispatch KEY --tenant T --param k=v`: ask for one job, optionally wait for it.

The request goes through :func:`app.intake.submit.submit` in this process, so a bad request is
refused at once (exit 2, the audit row kept) and a good one is published when it commits. The
job id goes to stdout, everything for people to stderr, so ``JOB=$(jobq dispatch ...)`` works.
"""

from __future__ import annotations

from typing import Annotated

import typer
from rich.text import Text

from app.ops.cli.args import actor, parse_params, parse_run_at
from app.ops.cli.common import err, fail


def register(app: typer.Typer) -> None:
    app.command("dispatch")(dispatch)


def dispatch(
    intent_key: Annotated[str, typer.Argument(metavar="KEY",
                                              help="The intent key, e.g. system.exec.echo.")],
    tenant: Annotated[str, typer.Option("--tenant", "-t",
                                        help="The tenant: its id or exact name.")],
    param: Annotated[list[str] | None, typer.Option(
        "--param", "-p", metavar="KEY=VALUE",
        help="A parameter; repeatable. VALUE is JSON when it parses as JSON (3, true, [1,2]) "
             "unless the intent's schema says the field is text.")] = None,
    params_json: Annotated[str | None, typer.Option(
        "--params-json", metavar="JSON", help="All parameters as one JSON object.")] = None,
    run_at: Annotated[str | None, typer.Option(
        "--run-at", metavar="WHEN",
        help="Not before this time: ISO 8601 (local time if no offset) or +10m / +2h.")] = None,
    idempotency_key: Annotated[str | None, typer.Option(
        "--idempotency-key", help="A repeat of the same request under the same key (for the "
                                  "tenant) returns the existing job instead of a new one; a "
                                  "different request under it is refused.")] = None,
    max_retries: Annotated[int | None, typer.Option(
        "--max-retries", min=0, help="Override the intent's retry budget.")] = None,
    requires_approval: Annotated[bool, typer.Option(
        "--requires-approval", help="Wait in awaiting_approval until someone approves it "
                                    "(jobq approve ID).")] = False,
    wait: Annotated[bool, typer.Option(
        "--wait", "-w", help="Show its progress until it ends; exit 1 unless it completed.")] = False,
    timeout: Annotated[float | None, typer.Option(
        "--timeout", min=0.1, help="With --wait: give up watching after this many seconds.")] = None,
) -> None:
    """Dispatch an intent for a tenant; prints the job id."""
    from app.core.errors import IdempotencyConflict, IntentRefused
    from app.core.registry import manifest
    from app.intake.submit import submit
    from app.ops.cli.lookup import find_tenant
    from app.store import db

    intent = manifest.get(intent_key)
    schema = None
    if intent is not None:
        try:
            schema = intent.params_model.model_json_schema()
        except Exception as exc:
            raise fail(f"intent {intent_key!r} cannot load its parameter model: {exc}") from None
    params = parse_params(param or [], params_json, schema)
    when = parse_run_at(run_at)

    with db.session() as session:
        found = find_tenant(session.connection(), tenant)
        try:
            job_id = submit(session, tenant_id=found["id"], intent_key=intent_key,
                            intent_params=params, idempotency_key=idempotency_key, run_at=when,
                            max_retries=max_retries, source="cli",
                            requires_approval=requires_approval, requested_by=actor())
        except IdempotencyConflict as clash:  # nothing was written
            raise fail(clash.telling("--idempotency-key", clash.key, clash.job_id), 2) from None
        except IntentRefused as refused:
            session.commit()  # the refusal is audited, as for every other caller
            where = f" (recorded as failed job {refused.job_id})" if refused.job_id else ""
            raise fail(f"{refused}{where}", 2) from None
        session.commit()

    typer.echo(job_id)
    note = Text(f"dispatched {intent_key} for {found['name']}", style="dim")
    if when:
        note.append(f", due {when}")
    if requires_approval or (intent is not None and intent.requires_approval):
        note.append(f"; it awaits approval: jobq approve {job_id[:8]}")
    err.print(note)
    if not wait:
        return
    from app.ops.cli.watch import outcome_line, watch

    row = watch(job_id, intent_key, err, timeout=timeout)
    err.print(outcome_line(row, err.width))
    raise typer.Exit(0 if row["status"] == "completed" else 1)
