"""`jobq intents`: the manifest, and a check that every entry imports."""

from __future__ import annotations

import typer

from app.cli import console, err

app = typer.Typer(help="The intent manifest.", no_args_is_help=False)


@app.callback(invoke_without_command=True)
def intents_list(ctx: typer.Context) -> None:
    """List every intent with its queue and description."""
    if ctx.invoked_subcommand:
        return
    from rich.table import Table

    from app.registry import manifest

    table = Table("intent", "queue", "retries", "time limit", "description")
    for intent in manifest:
        table.add_row(
            intent.key,
            intent.queue,
            str(intent.effective_max_retries),
            f"{intent.effective_time_limit}s",
            intent.description,
        )
    console.print(table)


@app.command("check")
def intents_check() -> None:
    """Import every handler and parameter model; fail loudly on a broken entry."""
    from app.manifest import check
    from app.registry import manifest

    problems = check(manifest)
    for problem in problems:
        err.print(f"[red]broken:[/] {problem}")
    if problems:
        raise typer.Exit(1)
    console.print(f"{len(manifest)} intents, all importable")
