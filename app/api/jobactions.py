"""What the API's routes and the web console do to one job: find it (another tenant's is not
found), cancel, retry (on corrected parameters), approve, reject. Each goes through
app.intake.actions, as the command line does, and answers a refusal as a :class:`Denied`.

``tenant_id`` None acts as an operator (every academy, the engine's own connection); a tenant's
id reads and writes through that tenant's row-level security only.
"""

from __future__ import annotations

import uuid
from typing import Any

from app.api import schemas
from app.api.auth import Denied
from app.core.errors import IntentRefused, ParamsNotKept
from app.core.registry import manifest
from app.intake import actions
from app.intake.waiting import why_waiting
from app.store import db, reads


def job_id(value: str) -> str:
    try:
        return str(uuid.UUID(value))
    except ValueError:
        raise Denied(404, f"no job {value[:64]!r}") from None


def find_row(tenant_id: str | None, value: str) -> dict[str, Any]:
    """The job's row as the store reads it (with its academy's name and status), seen as
    ``tenant_id`` (None: an operator): 404 when that caller has no job of that id."""
    found_id = job_id(value)
    with db.begin(tenant_id) as conn:
        found = reads.find_jobs_by_prefix(conn, found_id, found_id)
    if not found:
        raise Denied(404, f"no job {found_id}")
    return found[0]


def load_job(tenant_id: str | None, value: str, *, history: bool = False) -> dict[str, Any]:
    """The job as the API answers it; ``history`` adds its events and why it waits."""
    found_id = job_id(value)
    with db.begin(tenant_id) as conn:
        found = reads.find_jobs_by_prefix(conn, found_id, found_id)
        if not found:
            raise Denied(404, f"no job {found_id}")
        out = schemas.job_out(found[0])
        if history:
            secret = schemas.secret_fields(out["intent_key"])
            out["events"] = [schemas.event_out(e, secret)
                             for e in reads.job_events(conn, found_id)]
    if history:
        out["waiting"] = [r.as_dict() for r in why_waiting(found_id, wait=False)] \
            if out["status"] in ("pending", "awaiting_approval") else []
    return out


def cancel(tenant_id: str | None, value: str, *, by: str, reason: str | None) -> str:
    """Cancel the job; the status it had (409 when it cannot be cancelled)."""
    job = find_row(tenant_id, value)
    was = actions.cancel(job["id"], reason=reason or f"cancelled by {by}", by=by,
                         tenant_id=tenant_id)
    if was is None:
        raise Denied(409, f"job {job['id']} is {job['status']}: only pending, processing or "
                          "awaiting_approval jobs can be cancelled")
    return was


def retry(tenant_id: str | None, value: str, *, by: str,
          params: dict[str, Any] | None) -> tuple[str, str]:
    """Run a failed or cancelled job again, on ``params`` when given (validated against its
    intent; 422 naming the field); ``(was, status)``."""
    from app.core.validation import validate_params

    job = find_row(tenant_id, value)
    if params is not None:
        intent = manifest.get(job["intent_key"])
        if intent is None:
            raise Denied(409, f"job {job['id']}'s intent is not in this manifest")
        try:
            params = validate_params(intent, params)
        except IntentRefused as refused:
            raise Denied(422, str(refused), field=refused.field) from None
    try:
        done = actions.requeue([{"id": job["id"]}], by=by, params=params, tenant_id=tenant_id)
    except ParamsNotKept as refused:
        raise Denied(422, f"{actions.params_not_kept(job)}: send them with the retry, "
                          '{"intent_params": {...}}', field=refused.field) from None
    if not done:
        raise Denied(409, f"job {job['id']} is {job['status']}: only failed or cancelled jobs "
                          "of an active tenant can be retried")
    return done[0][1], done[0][2]


def approve(tenant_id: str | None, value: str, *, by: str, note: str | None) -> None:
    job = find_row(tenant_id, value)
    if actions.approve(job["id"], by=by, note=note, tenant_id=tenant_id) is None:
        raise Denied(409, f"job {job['id']} is {job['status']}, not awaiting_approval")


def reject(tenant_id: str | None, value: str, *, by: str, reason: str | None) -> None:
    job = find_row(tenant_id, value)
    if not actions.reject(job["id"], by=by, reason=reason or f"rejected by {by}",
                          tenant_id=tenant_id):
        raise Denied(409, f"job {job['id']} is {job['status']}, not awaiting_approval")
