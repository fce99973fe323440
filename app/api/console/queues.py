"""The console's Queues page (operators): per queue, its window and what is handed over,
running, the academies with work ready and the oldest wait, the last minute's rate, whether a
worker consumes it, and the share of the queue each ready academy is getting."""

from __future__ import annotations

from app.api.auth import Denied
from app.api.console.render import e, page
from app.api.console.session import Viewer
from app.core.manifest import QUEUES
from app.core.settings import settings
from app.intake.waiting import COUNT_CAP, served_queues
from app.store import db
from app.store import queues as store

SHARES_SHOWN = 20


def _n(value: int | None) -> str:
    if value is None:
        return ""
    return f"{value:,}+" if value >= COUNT_CAP else f"{value:,}"


def queues_page(viewer: Viewer) -> str:
    if not viewer.operator:
        raise Denied(403, "only an operator's session sees the queues (they span academies)")
    served = served_queues(wait=False)
    sections = []
    with db.begin(None) as conn:
        for queue in QUEUES:
            o = store.overview(conn, queue)
            ready = store.shares(conn, queue, limit=SHARES_SHOWN)
            window = o["window_size"] or settings.fair_window
            workers = ("unknown" if served is None else
                       "yes" if queue in served else '<span class="err">none</span>')
            wait = "" if o["oldest_wait_s"] is None else f"{o['oldest_wait_s']:.1f} s"
            facts = (f"<tr><th>window</th><td>{window:,}</td></tr>"
                     f"<tr><th>handed over, not started</th><td>{_n(o['in_flight'])}</td></tr>"
                     f"<tr><th>running</th><td>{_n(o['running'])}</td></tr>"
                     f"<tr><th>academies with work ready</th><td>{o['ready_academies']:,}</td></tr>"
                     f"<tr><th>oldest wait</th><td>{wait}</td></tr>"
                     f"<tr><th>finished, last minute</th><td>{o['finished_last_minute']:,} "
                     f"({o['finished_last_minute'] / 60:.1f}/s)</td></tr>"
                     f"<tr><th>a worker consumes it</th><td>{workers}</td></tr>")
            rows = "".join(
                f'<tr><td><a href="/ui/jobs?academy={e(r["name"])}&amp;queue={e(queue)}">'
                f'{e(r["name"])}</a></td><td>{r["weight"]:g}</td>'
                f'<td>{(r["share"] or 0) * 100:.1f}%</td><td>{r["busy"]:,}</td></tr>'
                for r in ready)
            share = ('<div class="scroll"><table><thead><tr><th>ready academy (fair order)'
                     '</th><th>weight</th><th>share</th><th>running or handed over</th></tr>'
                     f'</thead><tbody>{rows}</tbody></table></div>' if rows else "")
            sections.append(f'<section class="queue" data-queue="{e(queue)}"><h2>{e(queue)}</h2>'
                            f'<table class="details">{facts}</table>{share}</section>')
    return page("Queues", viewer, f"<h1>Queues</h1>{''.join(sections)}", active="queues")
