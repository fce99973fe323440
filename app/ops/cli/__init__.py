"""``jobq``: the command line. Run the system, dispatch intents, look at jobs.

Exit codes scripts can trust: 0 success; 1 a failure the command reports (an unknown job, a
job that failed, a broken manifest, an unreachable database); 2 bad arguments (printed as one
line), a refused dispatch included. Each command group lives in its own module here, what
they share in :mod:`app.ops.cli.common`; this module only assembles them and runs the result.
"""

from __future__ import annotations

import sys

import typer

from app.ops.cli import (
    api,
    approvals,
    cancel,
    dispatch,
    flower,
    intents,
    jobs,
    keys,
    live,
    migrate,
    retry,
    run,
    schedules,
    stats,
    tenants,
)
from app.ops.cli.common import business_commands, console, say_error

app = typer.Typer(
    name="jobq",
    help="Intent-based jobs on Celery, audited in PostgreSQL.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _register_commands() -> None:
    # Each command group lives in its own module under app/ops/cli/. A module either adds its
    # commands itself (``register(app)``) or is one Typer group (``app``) named after it; the
    # business adds its own (the manifest module's COMMANDS).
    for module in (run, dispatch, jobs, live, retry, cancel, approvals, stats, flower, api):
        module.register(app)
    app.add_typer(intents.app, name="intents")
    app.add_typer(keys.app, name="keys")
    app.add_typer(tenants.app, name="tenants")
    app.add_typer(schedules.app, name="schedules")
    for module in business_commands():
        module.register(app, run.standalone_setup)
    migrate.register(app)


_register_commands()


def _click_exceptions():
    """Click's exception classes as this Typer raises them (recent Typer vendors Click)."""
    try:
        from typer._click import exceptions
    except ImportError:  # older Typer runs on Click itself
        from click import exceptions
    return exceptions


def main(argv: list[str] | None = None) -> None:
    """The ``jobq`` entry point: every error is one line and a trustworthy exit code."""
    from sqlalchemy.exc import OperationalError

    from app.core.settings import SettingsError
    from app.ops.embedded import EmbeddedError

    ex = _click_exceptions()
    no_args = getattr(ex, "NoArgsIsHelpError", ())
    command = typer.main.get_command(app)
    try:
        code = command.main(args=argv, prog_name="jobq", standalone_mode=False)
    except no_args as exc:  # Typer's rich help has printed itself by now
        if exc.format_message():
            console.print(exc.format_message(), markup=False, highlight=False)
        sys.exit(2)
    except ex.UsageError as exc:
        where = exc.ctx.command_path if exc.ctx else "jobq"
        say_error(f"{where}: {exc.format_message()} (see {where} --help)")
        sys.exit(2)
    except ex.ClickException as exc:
        say_error(exc.format_message())
        sys.exit(exc.exit_code)
    except (getattr(ex, "Abort", typer.Abort), typer.Abort, KeyboardInterrupt):
        sys.exit(130)
    except SettingsError as exc:
        say_error(str(exc))
        sys.exit(2)
    except EmbeddedError as exc:
        say_error(str(exc))
        sys.exit(1)
    except OperationalError as exc:
        from app.core.redaction import redact

        reason = str(exc.orig) if exc.orig else str(exc)
        say_error(f"cannot reach the database: {redact(reason)}")
        sys.exit(1)
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
