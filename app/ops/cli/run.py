"""`jobq run`: the whole system here, for a newcomer and a developer.

Services (embedded unless configured), migrations, the start-up steps (schedules, the demo
academy), then workers, beat, Flower and the API under :class:`app.ops.supervisor.Supervisor`,
each writing to its own log file under ``$JOBQ_HOME/logs``. The terminal stays short: a few
lines while it starts, then, once every part answers (:mod:`app.ops.readiness`), the summary
last: where things are, and a command to paste that works from another terminal as printed.
"""

from __future__ import annotations

import os
import shlex
import shutil
import socket
import sys
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.text import Text
from sqlalchemy.orm import Session

from app.ops.cli.common import console, err, fail, say_error

if TYPE_CHECKING:  # honcho loads only when jobq run does
    from app.ops.supervisor import Supervisor

#: Seconds ``jobq run`` gives its processes to stop after Ctrl-C before killing them: long
#: enough for a worker's warm shutdown to finish short jobs and for Flower to save its state.
STOP_GRACE_SECONDS = 15
#: Seconds to wait for every part to answer before saying which has not (it keeps waiting).
PATIENCE_SECONDS = 90


def register(app: typer.Typer) -> None:
    app.command("run")(run)


def worker_commands(celery: str) -> dict[str, str]:
    """The worker processes ``jobq run`` starts (app/ops/workers.py says which and why)."""
    from app.ops.workers import WORKERS, worker_args

    return {name: f"{celery} -A app worker {' '.join(worker_args(name))} -l INFO"
            for name in WORKERS}


def worker_nodes() -> dict[str, str]:
    """The node name each worker process answers pings as (``realtime@host``) -> its name."""
    from app.ops.workers import WORKERS

    host = socket.gethostname()
    return {args[args.index("-n") + 1].replace("%h", host): name
            for name, args in WORKERS.items()}


@dataclass(frozen=True)
class RunSetup:
    """What a ``jobq run`` hook (and a business command) gets: the services the system uses,
    and the few operations business commands may ask of the engine
    (:class:`app.handler_api.Operations`)."""

    database_url: str
    broker_url: str | None
    home: Path
    demo: bool = False
    #: How to call this jobq from another terminal in this folder.
    jobq: str = "jobq"

    def session(self) -> Session:
        from app.store import db

        return Session(db.engine(self.database_url), expire_on_commit=False)

    def ensure_tenant(self, name: str) -> str:
        from app.store import db, tenants

        with db.engine(self.database_url).begin() as conn:
            found = tenants.find_tenants_by_name(conn, name)
            return found[0]["id"] if found else tenants.create_tenant(conn, name)

    def submit_for_tenant(self, session: Session, tenant_id: str,
                          requests: Sequence[tuple[str, dict[str, Any]]]) -> list[str]:
        from app.core.validation import Request
        from app.intake.submit import submit_many

        return submit_many(session, [Request(tenant_id, key, params) for key, params in requests],
                           source="cli")


def standalone_setup() -> RunSetup:
    """What a business command run on its own (not under ``jobq run``) gets: the configured
    services."""
    from app.core.settings import command_path, settings

    return RunSetup(settings.require_database_url(), settings.broker_url, settings.home,
                    jobq=jobq_command(Path.cwd(), command_path()))


def sibling_command(name: str) -> str:
    """A console script installed beside this Python (the venv's), else ``python -m``."""
    beside = Path(sys.executable).with_name(name)
    if beside.exists():
        return str(beside)
    return f"{sys.executable} -m {'app.ops.cli' if name == 'jobq' else name}"


def jobq_command(cwd: Path, path: str | None) -> str:
    """What to type in another terminal in ``cwd`` to run this jobq: ``jobq`` when that is the
    one ``path`` (``$PATH``) finds, else this one's path, relative to ``cwd`` when inside it
    (``.venv/bin/jobq``, as ``./dev run`` installs it)."""
    script = Path(sys.executable).with_name("jobq")
    if not script.exists():
        return f"{shlex.quote(sys.executable)} -m app.ops.cli"
    found = shutil.which("jobq", path=path)
    if found is not None and os.path.samefile(found, script):
        return "jobq"
    try:
        shown = str(script.absolute().relative_to(cwd.absolute()))
    except ValueError:
        shown = str(script.absolute())
    return shlex.quote(shown)


def _port_in_use(address: str, port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind((address or "0.0.0.0", port))
        except OSError:
            return True
    return False


def run(
    demo: Annotated[bool, typer.Option(help="Create the demo academy.")] = True,
    flower: Annotated[bool, typer.Option(help="Start Flower.")] = True,
    api: Annotated[bool, typer.Option(help="Start the HTTP API (jobq api).")] = True,
) -> None:
    """Run the whole system here: database, broker, migrations, workers, beat and Flower.

    With DATABASE_URL and CELERY_BROKER_URL unset, an embedded PostgreSQL and Redis start
    under $JOBQ_HOME (default ./.jobq). Each process writes to its own log in $JOBQ_HOME/logs;
    once everything answers, a summary says where things are. A process that stops on its own
    is started again (the terminal says so, with the end of its log); Ctrl-C stops everything.
    """
    import honcho.manager

    from app.core.registry import manifest
    from app.core.settings import child_environment, command_path, reload, settings
    from app.ops.cli.flower import credentials as flower_credentials
    from app.ops.supervisor import Supervisor, shown_path

    started = time.monotonic()
    # The manifest, and with it the business's settings: a malformed one stops jobq run here,
    # before anything starts, rather than each worker as it starts.
    len(manifest)
    login = None
    if flower:  # refuse before anything starts, not after the rest is up
        if _port_in_use(settings.flower_address, settings.flower_port):
            raise fail(f"port {settings.flower_port} is taken on {settings.flower_address}: "
                       "set FLOWER_PORT to a free one, or --no-flower", 2)
        # Generated here the first time, so the summary can show the password once.
        login = flower_credentials(settings.flower_basic_auth, settings.home)
    if api and _port_in_use(settings.api_address, settings.api_port):
        raise fail(f"port {settings.api_port} is taken on {settings.api_address}: "
                   "set JOBQ_API_PORT to a free one, or --no-api", 2)

    embedded = None
    urls = {"DATABASE_URL": settings.database_url if settings.database_url_given else None,
            "CELERY_BROKER_URL": settings.broker_url if settings.broker_url_given else None}
    if not (settings.database_url_given and settings.broker_url_given):
        from app.ops.embedded import EmbeddedServices

        console.print(f"starting the embedded services in [bold]{shown_path(settings.home)}[/]")
        embedded = EmbeddedServices(settings.home).start(
            postgres=not settings.database_url_given, redis=not settings.broker_url_given)
        embedded.write_urls()
        urls["DATABASE_URL"] = urls["DATABASE_URL"] or embedded.database_url
        urls["CELERY_BROKER_URL"] = urls["CELERY_BROKER_URL"] or embedded.broker_url
    # Each URL is set by now: configured, or the embedded service's.
    services = {name: url for name, url in urls.items() if url is not None}
    # Log lines reach the log files as they happen (PYTHONUNBUFFERED).
    env = child_environment({**services, "JOBQ_HOME": str(settings.home),
                             "PYTHONUNBUFFERED": "1"})
    # From here on this process works on the same services as its children (the readiness
    # pings, the demo's data): nothing has read the broker's settings yet.
    reload(env)
    try:
        from app.store import db

        db.migrate(env["DATABASE_URL"], log=False)
        console.print("database migrated")
        jobq = jobq_command(Path.cwd(), command_path())
        noted = _run_hooks(RunSetup(env["DATABASE_URL"], env["CELERY_BROKER_URL"],
                                    settings.home, demo, jobq))
        celery = sibling_command("celery")
        procs = worker_commands(celery)
        settings.home.mkdir(parents=True, exist_ok=True)
        procs["beat"] = (
            f"{celery} -A app beat -l INFO "
            f"--schedule {settings.home / 'celerybeat-schedule'} --pidfile="
        )
        if flower:
            procs["flower"] = f"{sibling_command('jobq')} flower"
        if api:
            procs["api"] = f"{sibling_command('jobq')} api"
        honcho.manager.KILL_WAIT = STOP_GRACE_SECONDS
        logs = settings.home / "logs"
        manager = Supervisor(logs, _say)
        for name, cmd in procs.items():
            manager.add_process(name, cmd, env=env)
        console.print(f"starting {', '.join(procs)}; their output goes to "
                      f"{shown_path(logs)}/NAME.log", soft_wrap=True)
        stop = threading.Event()
        summary = threading.Thread(
            target=_summary_when_up, name="jobq-run-summary", daemon=True,
            args=(manager, stop, started, _urls(login, api, jobq), noted, jobq))
        summary.start()
        try:
            manager.loop()
        finally:
            stop.set()
        code = manager.returncode or 0
    finally:
        if embedded is not None:
            embedded.stop()
    console.print("everything stopped")
    # Ctrl-C is how a user stops it: a clean stop, not an error.
    raise typer.Exit(0 if code in (130, 143) else code)


def _say(line: str, style: str = "") -> None:
    """A line for the person watching: errors (red) to stderr, the rest to stdout."""
    (err if style == "red" else console).print(Text(line, style=style), soft_wrap=True)


def _urls(flower: Any, api: bool, jobq: str) -> list[tuple[str, str]]:
    """The summary's addresses: (what, where). ``flower``: its login
    (:class:`app.ops.cli.flower.Credentials`), when it runs."""
    from app.core.settings import settings

    urls = []
    if flower is not None:
        url = f"http://{settings.flower_address or '0.0.0.0'}:{settings.flower_port}/"
        urls.append(("Flower", flower.summary(url).removeprefix("Flower: ")))
    if api:
        urls.append(("API", f"http://{settings.api_address}:{settings.api_port}/docs  "
                            f"(`{jobq} keys create --tenant T` makes a key)"))
        urls.append(("UI", f"http://{settings.api_address}:{settings.api_port}/ui  "
                           f"(log in with a key; every academy: `{jobq} keys create "
                           "--operator --name ops --scopes jobs:read,jobs:write,"
                           "jobs:approve`)"))
    if settings.tracing_enabled:  # every process it starts traces too (docs/tracing.md)
        from app.core import tracing
        from app.core.redaction import redact

        urls.append(("Traces", f"{redact(tracing.traces_url())} (OTLP/HTTP)"
                     + (f"; a job's: {settings.trace_url}" if settings.trace_url else "")))
    return urls


def _probes(manager: Supervisor, since: float) -> list[Any]:
    from app.core.settings import settings
    from app.ops import readiness

    probes = readiness.WorkerPings(worker_nodes()).probes()
    if "beat" in manager.names:
        probes.append(readiness.beat_sweeps(since))
    if "flower" in manager.names:
        where = readiness.local_address(settings.flower_address)
        probes.append(readiness.Probe("flower", lambda: readiness.answers(
            f"http://{where}:{settings.flower_port}/healthcheck")))
    if "api" in manager.names:
        where = readiness.local_address(settings.api_address)
        probes.append(readiness.Probe("api", lambda: readiness.answers(
            f"http://{where}:{settings.api_port}/v1/health")))
    return probes


def _summary_when_up(manager: Supervisor, stop: threading.Event, started: float,
                     urls: list[tuple[str, str]], noted: list[str], jobq: str) -> None:
    """Print the summary once every part answers; until then, say once what keeps it."""
    from app.ops import readiness
    from app.ops.supervisor import shown_path

    def slow(names: list[str]) -> None:
        _say(f"still waiting, after {PATIENCE_SECONDS} s, for {', '.join(names)}: see "
             + ", ".join(shown_path(manager.log_of(n)) for n in names), "yellow")

    wall_start = time.time() - (time.monotonic() - started)
    if not readiness.wait_until_up(_probes(manager, wall_start), stop=stop,
                                   patience=PATIENCE_SECONDS, slow=slow):
        return
    lines: list[Text] = [Text.assemble(
        ("jobq is up", "bold green"), f" after {time.monotonic() - started:.0f} s; "
        "Ctrl-C stops everything")]
    width = max([len(what) for what, _ in urls] + [4])
    for what, where in urls:
        lines.append(Text(f"  {what:<{width}}  {where}"))
    logs = shown_path(manager.log_dir)
    lines.append(Text(f"  {'logs':<{width}}  {logs}/ (one per process: "
                      f"{', '.join(p + '.log' for p in manager.names)})"))
    if os.geteuid() == 0:
        # Celery's warning stays in the logs, unsilenced: it is true, if less pressing for
        # workers that take JSON only (C_FORCE_ROOT is about pickle, which they refuse).
        lines.append(Text(
            f"  {'':<{width}}  as root: each worker's log starts with Celery's superuser "
            "warning; they take JSON only (no pickle), but a normal user is safer", style="dim"))
    if jobq != "jobq" and not any(line.lstrip().startswith(jobq) for line in noted):
        lines.append(Text(f"  {'jobq':<{width}}  {jobq} (it is not on PATH)"))
    lines += [Text(line) for line in noted]
    for line in lines:
        console.print(line, soft_wrap=True, highlight=False)


def _run_hooks(setup: RunSetup) -> list[str]:
    """Call the ``on_run`` start-up step of the schedules and of each business command; the
    lines they return go into the summary."""
    from app.ops.cli import schedules
    from app.ops.cli.common import business_commands

    noted: list[str] = []
    for name, hook in [("schedules", schedules.on_run),
                       *((m.__name__, getattr(m, "on_run", None)) for m in business_commands())]:
        if hook is None:
            continue
        try:
            said: Iterable[str] | None = hook(setup)
        except Exception as exc:  # one broken extra must not keep the system down
            say_error(f"{name}: its start-up step failed: {exc}")
            continue
        noted += list(said or ())
    return noted
