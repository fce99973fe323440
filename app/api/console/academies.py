"""The console's Academies page (operators): each academy's backlog, running jobs, oldest wait,
weight and caps, status, as `jobq tenants` lists them; suspend, resume and set limits through
app.intake.actions (as `jobq tenants suspend|resume|set` do), audited in ``tenant_events`` with
the session's identity."""

from __future__ import annotations

from typing import Any

from app.api.auth import Denied
from app.api.console.render import csrf_field, e, page
from app.api.console.session import Viewer
from app.intake import actions
from app.store import db, tenants


def _require_operator(viewer: Viewer) -> None:
    if not viewer.operator:
        raise Denied(403, "only an operator's session manages academies")


def _wait(seconds: float | None) -> str:
    if seconds is None:
        return ""
    if seconds < 60:
        return f"{seconds:.0f} s"
    if seconds < 3600:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def _row(viewer: Viewer, t: dict[str, Any]) -> str:
    caps = ", ".join(f"{q} {n}" for q, n in sorted((t["queue_caps"] or {}).items()))
    token = csrf_field(viewer)
    action = f"/ui/academies/{e(t['id'])}"
    toggle = ""
    if t["status"] in ("active", "suspended"):
        verb = "suspend" if t["status"] == "active" else "resume"
        toggle = (f'<form method="post" action="{action}/{verb}" class="inline">{token}'
                  f'<button class="{"cancel" if verb == "suspend" else "approve"}">'
                  f"{verb.capitalize()}</button></form>")
    limits = (f'<form method="post" action="{action}/limits" class="inline">{token}'
              f'<input name="weight" size="4" value="{t["weight"]:g}" aria-label="weight">'
              f'<input name="max_running" size="4" value="{t["max_running"] or ""}" '
              'placeholder="no cap" aria-label="cap"><button>Set</button></form>')
    status = f'<span class="st st-{"completed" if t["status"] == "active" else "held"}">' \
             f'{e(t["status"])}</span>'
    return (f'<tr data-academy="{e(t["id"])}"><td><a href="/ui/jobs?academy={e(t["name"])}">'
            f'{e(t["name"])}</a></td><td>{status}</td><td>{t["backlog"]:,}</td>'
            f'<td>{t["running"]:,}</td><td>{_wait(t["oldest_wait_s"])}</td>'
            f'<td class=opt>{t["jobs_24h"]:,} / {t["failed_24h"]:,}</td>'
            f'<td>{e(caps)}</td><td>{toggle}</td><td>{limits}</td></tr>')


def academies_page(viewer: Viewer, *, done: str = "", error: str = "") -> str:
    _require_operator(viewer)
    with db.begin(None) as conn:
        rows = [t for t in tenants.list_tenants(conn) if t["status"] != "deleted"]
    rows.sort(key=lambda t: (-(t["backlog"] or 0), t["name"]))
    head = ("<th>academy</th><th>status</th><th>backlog</th><th>running</th>"
            "<th>oldest wait</th><th class=opt>24 h / failed</th><th>queue caps</th><th></th>"
            "<th>weight, cap</th>")
    table = (f'<div class="scroll"><table class="academies"><thead><tr>{head}</tr></thead>'
             f'<tbody>{"".join(_row(viewer, t) for t in rows)}</tbody></table></div>')
    note = (f'<p class="msg msg-ok" role="status">{e(done)}</p>' if done else "") + \
           (f'<p class="msg msg-error" role="alert">{e(error)}</p>' if error else "")
    return page("Academies", viewer, f"<h1>Academies</h1>{note}{table}", active="academies")


def act(viewer: Viewer, tenant_id: str, verb: str, fields: dict[str, str]) -> str:
    """Suspend, resume or set the limits of an academy; what to tell the operator."""
    _require_operator(viewer)
    if verb in ("suspend", "resume"):
        was, pending = actions.set_tenant_status(
            tenant_id, "suspended" if verb == "suspend" else "active", by=viewer.name)
        if was is None:
            raise Denied(404, f"no academy {tenant_id[:64]}")
        if was == "deleted":
            raise Denied(409, "the academy is deleted")
        held = f"; its {pending:,} pending job(s) are held" if verb == "suspend" and pending \
            else f"; its {pending:,} held job(s) run again" if pending else ""
        return f"{'Suspended' if verb == 'suspend' else 'Resumed'}{held}."
    if verb != "limits":
        raise Denied(404, f"no action {verb[:32]!r}")
    try:
        weight = float(fields["weight"]) if fields.get("weight", "").strip() else None
        raw_cap = fields.get("max_running", "").strip()
        cap = int(raw_cap) if raw_cap else 0
        limits = actions.set_tenant_limits(tenant_id, weight=weight, max_running=cap,
                                           by=viewer.name)
    except ValueError as exc:
        raise Denied(422, f"limits not set: {exc}") from None
    except LookupError as exc:
        raise Denied(404, str(exc)) from None
    return (f"Limits set: weight {limits.weight:g}, "
            f"cap {limits.max_running if limits.max_running else 'none'}.")
