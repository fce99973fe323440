"""What the command modules share: the consoles, the one-line error, the job filter options,
and the business's command modules.

Every command module imports these from here and :mod:`app.ops.cli` only assembles the
modules, so no module of the command line imports the package that registers it.
"""

from __future__ import annotations

import importlib
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.text import Text

from app.store.models import JOB_STATUSES

console = Console()
err = Console(stderr=True)


def say_error(message: str) -> None:
    """``error: message`` on stderr, one line; the message is never read as markup."""
    err.print(Text.assemble(("error: ", "bold red"), " ".join(message.split())), soft_wrap=True)


def fail(message: str, code: int = 1) -> typer.Exit:
    say_error(message)
    return typer.Exit(code)


def business_commands() -> list[Any]:
    """The modules the manifest module names in ``COMMANDS`` (the demo, for one)."""
    from app.core.settings import settings

    module = importlib.import_module(settings.manifest.partition(":")[0])
    return [importlib.import_module(name) for name in getattr(module, "COMMANDS", ())]


# The options that choose jobs, shared by `jobq jobs`, `jobq retry` and `jobq stats`;
# app.ops.cli.lookup.job_filter turns them into the store's filter.
TenantOption = Annotated[str | None, typer.Option(
    "--tenant", "-t", help="Only this tenant (its id or exact name).")]
StatusOption = Annotated[list[str] | None, typer.Option(
    "--status", "-s", help=f"Only jobs in this state ({', '.join(JOB_STATUSES)}); repeatable.")]
IntentOption = Annotated[str | None, typer.Option(
    "--intent", "-i", help="Only this intent key, or a family pattern such as 'billing.*'.")]
SinceOption = Annotated[str | None, typer.Option(
    "--since", help="Only jobs created within this window (30m, 1h, 7d) or since a time.")]
UntilOption = Annotated[str | None, typer.Option(
    "--until", help="Only jobs created before: this long ago (30m, 1d) or a time.")]
