"""`jobq stats`: how the jobs of a window went, per intent and overall (app.store.window_stats:
finished jobs by when they finished, most of them from beat's hourly rollup).

Counts by state, run time percentiles (p50/p95 of the last attempt, start to finish), the wait
from due to start, failure rate (failed over finished-or-failed), and the slowest intents. Counts
are exact; percentiles come from log-bucket histograms (app.core.sketch), within about 4.4%.
"""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.table import Table
from rich.text import Text

from app.ops.cli import show
from app.ops.cli.common import IntentOption, TenantOption, console
from app.ops.cli.lookup import job_filter
from app.store import db, window_stats

#: How many intents the "slowest" list names.
SLOWEST = 5
#: How many tenants the wait-by-tenant table shows (the longest waits first).
TENANTS_SHOWN = 10


def register(app: typer.Typer) -> None:
    app.command("stats")(stats)


def failure_rate(row: dict[str, Any]) -> float | None:
    ended = row["completed"] + row["failed"]
    return row["failed"] / ended if ended else None


def stats(
    since: Annotated[str, typer.Option(
        "--since", help="The window (30m, 24h, 7d, or since a time): jobs that finished within "
        "it, and those waiting or running that were asked for within it.")] = "24h",
    until: Annotated[str | None, typer.Option(
        "--until", help="The window's end: this long ago (2h, 1d) or a time.")] = None,
    tenant: TenantOption = None,
    intent: IntentOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="The numbers as JSON.")] = False,
) -> None:
    """Counts by state and intent, p50/p95 run times, failure rate and the slowest intents."""
    with db.engine().connect() as conn:
        where = job_filter(tenant, None, intent, since, conn, until)
        rows, by_tenant = window_stats.window_stats(conn, where, tenants=TENANTS_SHOWN)
    per_intent = [r for r in rows if r["intent_key"] is not None]
    overall = next((r for r in rows if r["intent_key"] is None), None)
    for r in rows:
        r["failure_rate"] = failure_rate(r)
    slowest = sorted((r for r in per_intent if r["run_p95"] is not None),
                     key=lambda r: r["run_p95"], reverse=True)[:SLOWEST]
    caretaking = _caretaking_notes()
    sending = _channels()
    if as_json:
        console.print_json(data={
            "since": since,
            "until": until,
            "overall": overall,
            "intents": per_intent,
            "slowest": [r["intent_key"] for r in slowest],
            "tenants": by_tenant,
            "caretaking": caretaking,
            "channels": sending,
        })
        return
    if overall is None or not overall["total"]:
        console.print(f"no jobs in the last {since}" if since[:1].isdigit() else f"no jobs since {since}")
        _print_channels(sending)
        _print_caretaking(caretaking)
        return
    console.print(_table(per_intent, overall, since, console.width))
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
    if by_tenant and not tenant:
        console.print()
        table = Table(title="wait before start by tenant (longest p95 first)", title_justify="left",
                      box=None, header_style="bold", pad_edge=False)
        for name in ("tenant", "jobs", "pending", "wait p50", "wait p95"):
            table.add_column(name, justify="left" if name == "tenant" else "right")
        for r in by_tenant:
            table.add_row(Text(f"{r['name']} ({r['tenant_id'][:8]})"), str(r["total"]),
                          str(r["pending"]), show.duration(r["wait_p50"]),
                          show.duration(r["wait_p95"]))
        console.print(table)
    _print_channels(sending)
    _print_caretaking(caretaking)


def _channels() -> list[dict[str, Any]] | None:
    from app.run.channel_use import all_channels

    try:
        return all_channels()
    except Exception:
        return None


def _print_channels(channels: list[dict[str, Any]] | None) -> None:
    """Each outside channel's use of its rate (the last 10 s), and each academy's share of it
    with what waits for it."""
    if not channels:
        return
    console.print()
    console.print(Text("channels (shared send rates, the last 10 s)", style="bold"))
    for c in channels:
        used = c["used_of_rate"]
        line = Text(f"  {c['channel']}: {c['rate']:g}/s, used {c['used_per_s']:g}/s")
        line.append(f" ({_percent(used)})" if used is not None else "")
        line.append(f", busiest second {c['busiest_second']}",
                    style="red" if c["rate"] and c["busiest_second"] > c["rate"] else "")
        console.print(line)
        table = Table(box=None, header_style="bold", pad_edge=False, padding=(0, 1, 0, 4))
        for name in ("academy", "weight", "share/s", "cap/s", "sent/s", "waiting",
                     "daily used/quota", "jobs waiting for the day"):
            table.add_column(name, justify="left" if name == "academy" else "right")
        for a in c["academies"]:
            quota = f"{a['sent_today']}/{a['daily_quota']}" if a["daily_quota"] else \
                str(a["sent_today"])
            table.add_row(Text(f"{a['name']} ({a['tenant_id'][:8]})"), f"{a['weight']:g}",
                          f"{a['share_per_s']:g}", f"{a['rate_cap']:g}" if a["rate_cap"] else "-",
                          f"{a['sent_per_s']:g}", str(a["messages_waiting"]), quota,
                          str(a["jobs_waiting_for_daily_quota"]))
        console.print(table)


#: What each caretaking task's "acted" count means.
_ACTED = {"sweep_due_jobs": "jobs published", "recover_lost_runs": "lost runs recovered",
          "expire_approvals": "unapproved jobs expired",
          "fire_schedules": "scheduled jobs fired", "apply_retention": "old jobs deleted",
          "roll_up_stats": "hours rolled up"}


def _caretaking_notes() -> dict[str, dict[str, float]] | None:
    """Beat's caretaking as its tasks noted it in Redis (they stay out of Flower); None when
    the broker cannot say."""
    from app.beat.caretaking import caretaker_notes

    try:
        return caretaker_notes()
    except Exception:
        return None


def _print_caretaking(notes: dict[str, dict[str, float]] | None) -> None:
    """One line per caretaking task: when it last ran, how often it has, what it did."""
    import time

    console.print()
    if notes is None:
        console.print(Text("caretaking: the broker cannot say (is Redis reachable?)", style="yellow"))
        return
    if not notes:
        console.print(Text("caretaking: beat has not run here yet (is `celery -A app beat` "
                           "running?)", style="yellow"))
        return
    console.print(Text("caretaking (beat's tasks; they stay out of Flower)", style="bold"))
    now = time.time()
    for name, note in notes.items():
        line = Text(f"  {name:<18} ")
        ago = now - note.get("last_at", now)
        line.append(f"last ran {show.duration(ago)} ago", style="red" if ago > 120 else "")
        line.append(f", {int(note.get('runs', 0))} runs, "
                    f"{int(note.get('acted', 0))} {_ACTED.get(name, 'acted on')}")
        if note.get("last_acted_at"):
            line.append(f" (last {show.duration(now - note['last_acted_at'])} ago)", style="dim")
        console.print(line)


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:.1f}%"


#: Columns a narrow terminal drops first, in order.
_OPTIONAL = ("awaiting", "wait p95", "max", "retries", "cancelled", "running", "pending")
_INTENT_MIN = 16


def _table(per_intent: list[dict], overall: dict, since: str, width: int) -> Table:
    """Counts and times per intent, fitted to ``width``: numbers keep their width, long intent
    keys give way, and the least needed columns go first on a narrow terminal."""
    title = f"jobs of the last {since}" if since[:1].isdigit() else f"jobs since {since}"
    columns: dict[str, Any] = {
        "total": lambda r: str(r["total"]),
        "pending": lambda r: _count(r["pending"], "yellow"),
        "running": lambda r: _count(r["processing"], "cyan"),
        "completed": lambda r: _count(r["completed"], "green"),
        "failed": lambda r: _count(r["failed"], "red"),
        "cancelled": lambda r: _count(r["cancelled"], "magenta"),
        "awaiting": lambda r: _count(r["awaiting"], "yellow"),
        "retries": lambda r: str(r["retries"]),
        "fail rate": lambda r: _percent(r["failure_rate"]),
        "p50": lambda r: show.duration(r["run_p50"]),
        "p95": lambda r: show.duration(r["run_p95"]),
        "max": lambda r: show.duration(r["run_max"]),
        "wait p95": lambda r: show.duration(r["wait_p95"]),
    }
    rows = [*per_intent, overall]
    widths = {name: max(len(name), *(Text.from_markup(str(cell(r))).cell_len
                                     if isinstance(cell(r), str) else cell(r).cell_len
                                     for r in rows))
              for name, cell in columns.items()}
    intent_width = max(len(r["intent_key"] or "all") for r in rows)
    shown = list(columns)
    for name in _OPTIONAL:
        if sum(widths[n] + 2 for n in shown) + _INTENT_MIN <= width:
            break
        shown.remove(name)
    intent_width = max(_INTENT_MIN, min(intent_width, width - sum(widths[n] + 2 for n in shown)))
    table = Table(title=title, title_justify="left", title_style="bold", box=None,
                  header_style="bold", pad_edge=False, show_footer=True)
    table.add_column("intent", footer="all", width=intent_width, no_wrap=True,
                     overflow="ellipsis")
    for name in shown:
        table.add_column(name, justify="right", footer=columns[name](overall),
                         width=widths[name], no_wrap=True)
    for r in per_intent:
        table.add_row(r["intent_key"], *(columns[name](r) for name in shown))
    return table


def _count(value: int, style: str) -> Text:
    return Text(str(value), style=style if value else "dim")
