"""The console's Channels page (operators): each outside channel's shared send rate (the
KakaoTalk account's 50/s), its use over the last seconds, and each academy sending on it with
its weight, share, own caps and what waits for it, as `jobq stats` shows them
(app/run/channel_use.py; docs/channels.md)."""

from __future__ import annotations

from typing import Any

from app.api.auth import Denied
from app.api.console.render import e, page
from app.api.console.session import Viewer
from app.run.channel_use import WINDOW, all_channels

COLUMNS = ("academy", "weight", "share/s", "cap/s", "sent/s", "messages waiting",
           "daily used / quota", "jobs waiting for the next day")


def _percent(value: float | None) -> str:
    return "" if value is None else f" ({value * 100:.0f}% of the rate)"


def _academy(a: dict[str, Any]) -> str:
    daily = (f"{a['sent_today']:,} / {a['daily_quota']:,}" if a["daily_quota"]
             else f"{a['sent_today']:,}")
    full = a["daily_quota"] and a["sent_today"] >= a["daily_quota"]
    cells = [f'<a href="/ui/jobs?academy={e(a["name"])}">{e(a["name"])}</a>',
             f"{a['weight']:g}", f"{a['share_per_s']:g}",
             f"{a['rate_cap']:g}" if a["rate_cap"] else "-", f"{a['sent_per_s']:g}",
             f"{a['messages_waiting']:,}",
             f'<span class="err">{daily}</span>' if full else daily,
             f"{a['jobs_waiting_for_daily_quota']:,}"]
    return (f'<tr data-academy="{e(a["tenant_id"])}">'
            + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")


def _channel(c: dict[str, Any]) -> str:
    over = c["rate"] and c["busiest_second"] > c["rate"]
    busiest = (f'<span class="err">{c["busiest_second"]:,}</span>' if over
               else f"{c['busiest_second']:,}")
    facts = (f"<tr><th>provider's rate</th><td>{c['rate']:g}/s</td></tr>"
             f"<tr><th>used, last {WINDOW} s</th><td>{c['used_per_s']:g}/s"
             f"{_percent(c['used_of_rate'])}</td></tr>"
             f"<tr><th>busiest second</th><td>{busiest}</td></tr>"
             f"<tr><th>academies sending or waiting</th><td>{len(c['academies']):,}</td></tr>")
    rows = "".join(_academy(a) for a in c["academies"])
    head = "".join(f"<th>{e(name)}</th>" for name in COLUMNS)
    table = (f'<div class="scroll"><table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody>'
             "</table></div>" if rows else "<p>No academy is sending on it now.</p>")
    return (f'<section class="channel" data-channel="{e(c["channel"])}"><h2>{e(c["channel"])}'
            f'</h2><table class="details">{facts}</table>{table}</section>')


def channels_page(viewer: Viewer, *, fragment: bool = False) -> str:
    """The page; ``fragment``: only its live part (the page reads it again every 2 s)."""
    if not viewer.operator:
        raise Denied(403, "only an operator's session sees the channels (they span academies)")
    found = all_channels()
    if found is None:
        live = '<p class="msg msg-error" role="alert">The broker cannot say (is Redis reachable?)</p>'
    elif not found:
        live = "<p>No channel has granted a message within the last hour.</p>"
    else:
        live = "".join(_channel(c) for c in found)
    if fragment:
        return live
    intro = ("<p>Each outside channel's rate is shared by the academies sending at the moment, "
             "by weight, within each academy's own caps (<code>jobq tenants set T --channel "
             "kakao --rate 10 --daily 5000</code>): the figures <code>jobq stats</code> shows, "
             "read again every 2 s.</p>")
    return page("Channels", viewer, f'<h1>Channels</h1>{intro}<div id="live">{live}</div>',
                active="channels", live="/ui/channels?fragment=1")
