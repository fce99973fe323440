"""`jobq demo`, and `jobq run`'s demo step: the demo academy (데모 학원) and a few of its students
with a command ready to paste; `jobq demo --dispatch-samples` also dispatches a sample of every
intent family for it.

Business commands like this one are named in the manifest module's ``COMMANDS``; ``jobq`` adds
them with :func:`register` and calls :func:`on_run` when it starts the system. Creating the
academy again adds nothing but what time has added (see :mod:`handlers.demo`).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Column, Table

from app.handler_api import IntentRefused, Operations
from handlers.demo import create_demo_academy, try_it

DEMO_TENANT_NAME = "데모 학원"
#: Modules whose ``sample_requests(session, tenant_id)`` give the samples of their families.
SAMPLE_SOURCES = ("handlers.demo", "handlers.student.samples", "handlers.communication.samples",
                  "handlers.report.samples")

console = Console()


def register(app: typer.Typer, operations: Callable[[], Operations]) -> None:
    def demo(
        students: Annotated[int, typer.Option(min=1, max=5000,
                                              help="Students in the demo academy.")] = 300,
        dispatch_samples: Annotated[bool, typer.Option(
            "--dispatch-samples/--no-dispatch",
            help="Also dispatch a sample intent of every family for it (jobs that change its "
                 "data: late notices, invoices, reports, ...). Without it, nothing is "
                 "dispatched.")] = False,
    ) -> None:
        """Print demo students to try intents on and a command to paste (--dispatch-samples:
        also dispatch a sample of every family).

        The demo academy (classes, students and guardians, attendance, invoices) is created
        when it is not there; a second time adds only what time has added. Nothing is
        dispatched unless asked for."""
        ops = operations()
        tenant_id, academy, sample, command = create_demo_data(ops, students=students)
        table = Table(title=f"{DEMO_TENANT_NAME} ({tenant_id})", show_header=False)
        for key, value in academy.items():
            if key != "tenant_id":
                table.add_row(key.replace("_", " "), str(value))
        console.print(table)
        if dispatch_samples:
            _dispatch_samples(ops, tenant_id)
        for line in try_it_lines(sample, command):
            console.print(line, markup=False, highlight=False, soft_wrap=True)

    app.command("demo")(demo)


def on_run(ops: Operations) -> list[str]:
    """``jobq run``'s start-up step: the demo academy exists before the workers start; its
    students and the command to paste go into the summary."""
    if not ops.demo:
        return []
    tenant_id, academy, sample, command = create_demo_data(ops)
    return [f"demo academy {DEMO_TENANT_NAME} ({tenant_id}): {academy['students']} students, "
            f"{academy['classes']} classes, {academy['open_invoices']} open invoices",
            *try_it_lines(sample, command)]


def create_demo_data(ops: Operations, *, students: int = 300
                     ) -> tuple[str, dict, list[tuple[str, str]], str]:
    """Ensure the demo tenant and its academy: its id, what it holds, a few students to try
    intents on and a command ready to paste."""
    tenant_id = ops.ensure_tenant(DEMO_TENANT_NAME)
    # The engine's own connection: it writes the demo academy's rows, each naming its tenant.
    with ops.session() as session:
        academy = create_demo_academy(session, tenant_id, students=students)
        session.commit()
        sample, command = try_it(session, tenant_id, DEMO_TENANT_NAME, ops.jobq)
    return tenant_id, academy.as_dict(), sample, command


def try_it_lines(sample: list[tuple[str, str]], command: str) -> list[str]:
    if not command:
        return []
    return ["students to try intents on:",
            *(f"  {name}  {student_id}" for student_id, name in sample),
            "try it (another terminal, this folder):",
            f"  {command}"]


def _dispatch_samples(ops: Operations, tenant_id: str) -> None:
    from handlers.manifest import INTENTS

    queues = {intent.key: intent.queue for intent in INTENTS}
    with ops.session() as session:
        samples = [(key, params) for source in SAMPLE_SOURCES
                   for key, params in importlib.import_module(source).sample_requests(
                       session, tenant_id)
                   if key in queues]
        try:
            ids = ops.submit_for_tenant(session, tenant_id, samples)
        except IntentRefused as exc:
            session.commit()  # keep the refusal's audit row
            console.print(f"[red]error:[/] a sample was refused: {exc}")
            raise typer.Exit(1) from None
        session.commit()
    table = Table(Column("job id", no_wrap=True, min_width=36), "intent", "queue")
    for job_id, (key, _) in zip(ids, samples, strict=True):
        table.add_row(job_id, key, queues.get(key, ""))
    console.print(table)
    families = sorted({key.split(".")[0] for key, _ in samples})
    console.print(f"dispatched {len(ids)} jobs ({', '.join(families)}); "
                  "a running worker (`jobq run`) takes them")
