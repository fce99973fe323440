"""`jobq stats`: how the jobs of a window went, per intent and overall.

Counts by state, run time percentiles (p50/p95 of the last attempt, start to finish), the wait
from due to start, failure rate (failed over finished-or-failed), and the slowest intents.
"""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.table import Table
from rich.text import Text

from app import db, queries
from app.cli import console, show
from app.cli.jobs import IntentOption, TenantOption, job_filter

#: How many intents the "slowest" list names.
SLOWEST = 5


def register(app: typer.Typer) -> None:
    app.command("stats")(stats)


def failure_rate(row: dict[str, Any]) -> float | None:
    ended = row["completed"] + row["failed"]
    return row["failed"] / ended if ended else None


def stats(
    since: Annotated[str, typer.Option(
        "--since", help="The window: jobs created within it (30m, 24h, 7d) or since a time.")] = "24h",
    tenant: TenantOption = None,
    intent: IntentOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="The numbers as JSON.")] = False,
) -> None:
    """Counts by state and intent, p50/p95 run times, failure rate and the slowest intents."""
    with db.engine().connect() as conn:
        where = job_filter(tenant, None, intent, since, conn)
        rows = queries.stats_by_intent(conn, where)
    per_intent = [r for r in rows if r["intent_key"] is not None]
    overall = next((r for r in rows if r["intent_key"] is None), None)
    for r in rows:
        r["failure_rate"] = failure_rate(r)
    slowest = sorted((r for r in per_intent if r["run_p95"] is not None),
                     key=lambda r: r["run_p95"], reverse=True)[:SLOWEST]
    if as_json:
        console.print_json(data={
            "since": since,
            "overall": overall,
            "intents": per_intent,
            "slowest": [r["intent_key"] for r in slowest],
        })
        return
    if overall is None or not overall["total"]:
        console.print(f"no jobs in the last {since}" if since[:1].isdigit() else f"no jobs since {since}")
        return
    console.print(_table(per_intent, overall, since))
    console.print()
    summary = Text()
    rate = overall["failure_rate"]
    summary.append(f"{overall['total']} jobs", style="bold")
    summary.append(f", failure rate {_percent(rate)}", style="red" if rate else "green")
    summary.append(f", run time p50 {show.duration(overall['run_p50'])} / "
                   f"p95 {show.duration(overall['run_p95'])}")
    summary.append(f", wait p50 {show.duration(overall['wait_p50'])}")
    console.print(summary)
    if slowest:
        line = Text("slowest (p95): ", style="bold")
        line.append(", ".join(f"{r['intent_key']} {show.duration(r['run_p95'])}" for r in slowest))
        console.print(line)


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:.1f}%"


def _table(per_intent: list[dict], overall: dict, since: str) -> Table:
    title = f"jobs of the last {since}" if since[:1].isdigit() else f"jobs since {since}"
    table = Table(title=title, title_justify="left", title_style="bold", box=None,
                  header_style="bold", pad_edge=False, show_footer=True)
    columns: list[tuple[str, str, Any]] = [
        ("intent", "left", lambda r: r["intent_key"] or "all"),
        ("total", "right", lambda r: str(r["total"])),
        ("pending", "right", lambda r: _count(r["pending"], "yellow")),
        ("running", "right", lambda r: _count(r["processing"], "cyan")),
        ("completed", "right", lambda r: _count(r["completed"], "green")),
        ("failed", "right", lambda r: _count(r["failed"], "red")),
        ("cancelled", "right", lambda r: _count(r["cancelled"], "magenta")),
        ("retries", "right", lambda r: str(r["retries"])),
        ("fail rate", "right", lambda r: _percent(r["failure_rate"])),
        ("p50", "right", lambda r: show.duration(r["run_p50"])),
        ("p95", "right", lambda r: show.duration(r["run_p95"])),
        ("max", "right", lambda r: show.duration(r["run_max"])),
        ("wait p95", "right", lambda r: show.duration(r["wait_p95"])),
    ]
    for name, justify, cell in columns:
        table.add_column(name, justify=justify, footer=cell(overall), no_wrap=True)
    for r in per_intent:
        table.add_row(*(cell(r) for _, _, cell in columns))
    return table


def _count(value: int, style: str) -> Text:
    return Text(str(value), style=style if value else "dim")
