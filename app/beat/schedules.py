"""Schedules: periodic intents in ``job_schedules``, each due cron slot fired exactly once.

Beat's ``jobq.fire_schedules`` calls :func:`fire_due` every ``JOBQ_SCHEDULE_INTERVAL``; it reads
the table afresh each time, so adding, pausing or removing a schedule needs no beat restart. A
slot becomes one job per tenant (idempotency key ``schedule:<id>:<slot>``, ``run_at`` the slot).
Two beats cannot fire a slot twice: the schedule row is locked while its slot is handled, the
(schedule, slot) run record is unique, and so is each job's idempotency key. The manifest's
``SCHEDULES`` (beside its ``INTENTS``) are the schedules every installation has.
"""

from __future__ import annotations

import datetime as dt
import logging
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy.exc import IntegrityError

from app.core.cron import (
    DEFAULT_TIMEZONE,
    ScheduleError,
    due_slots,
    idempotency_key,
    next_slot,
    validate_cron,
    zone,
)
from app.core.errors import IntentRefused, TenantRefused
from app.core.manifest import Schedule
from app.core.registry import manifest
from app.core.validation import Request, unknown_intent
from app.handoff import forget_after_commit
from app.intake.submit import submit_many
from app.store import db, tenants
from app.store import schedules as store

log = logging.getLogger("jobq.schedules")

#: Tenants per ``submit_many`` statement when a schedule fires for every active tenant.
TENANT_BATCH = 1000


def intent_problem(intent_key: str, intent_params: Any) -> str | None:
    """Why jobs of ``intent_key`` with these parameters would be refused, or None."""
    intent = manifest.get(intent_key)
    if intent is None:
        return unknown_intent(intent_key, manifest)
    if not isinstance(intent_params, Mapping):
        return f"intent_params must be a JSON object, not {type(intent_params).__name__}"
    from pydantic import ValidationError

    try:
        intent.params_model.model_validate(dict(intent_params))
    except ValidationError as exc:
        problems = [f"{'.'.join(str(p) for p in e['loc']) or 'intent_params'}: {e['msg']}"
                    for e in exc.errors(include_url=False)]
        return f"invalid intent_params for {intent_key!r}: " + "; ".join(problems)
    except Exception as exc:  # the parameter model itself does not load
        return f"intent {intent_key!r} cannot load its parameter model: {exc}"
    return None


@dataclass(frozen=True)
class SlotOutcome:
    """What one schedule did in one tick."""

    schedule: str
    slot_at: dt.datetime
    status: str  # fired, refused, or duplicate (another beat had handled the slot)
    jobs: int = 0
    skipped: int = 0
    error: str | None = None


_reported_broken: set[tuple[str, str, str]] = set()


def fire_due(now: dt.datetime | None = None) -> list[SlotOutcome]:
    """Fire every enabled schedule's due slot; ``now`` defaults to the database's clock.

    One schedule's trouble (a broken cron, an unknown intent) is recorded or logged and the
    others still fire.
    """
    with db.engine().connect() as conn:
        ids = store.enabled_ids(conn)
    outcomes: list[SlotOutcome] = []
    for schedule_id in ids:
        try:
            outcome = _fire_one(schedule_id, now)
        except Exception:
            log.exception("schedule %s could not be fired this tick", schedule_id)
            continue
        if outcome is not None:
            outcomes.append(outcome)
    return outcomes


def _fire_one(schedule_id: str, now: dt.datetime | None) -> SlotOutcome | None:
    with db.session() as session:
        row = store.lock(session, schedule_id)
        if row is None:  # another beat holds it, or it was paused or removed just now
            return None
        clock = now or row["now"]
        try:
            due = due_slots(row["cron"], row["timezone"], done_until=row["slots_done_until"],
                            now=clock)
        except (ScheduleError, ValueError) as exc:  # croniter's errors are ValueErrors
            _report_broken(row, exc)
            return None
        if due.latest is None:
            return None
        slot = due.latest
        if due.skipped:
            store.record_skipped(session, schedule_id, list(due.skipped))
            log.warning("schedule %s: %d%s missed slot(s) skipped, the latest (%s) fires",
                        row["name"], len(due.skipped), "+" if due.more_skipped else "",
                        slot.isoformat())
        tenants, refusal = _tenants_and_refusal(session, row)
        claimed = store.claim_slot(session, schedule_id, slot,
                                   status="refused" if refusal else "fired", error=refusal)
        store.advance(session, schedule_id, slot)
        if claimed is None:  # the slot was handled before (its watermark was moved back)
            session.commit()
            return SlotOutcome(row["name"], slot, "duplicate", skipped=len(due.skipped))
        made: list[str] = []
        if refusal is None:
            key = row["intent_key"]
            requests = [
                Request(tenant, key, row["intent_params"], run_at=slot,
                        idempotency_key=idempotency_key(schedule_id, slot))
                for tenant in tenants
            ]
            try:
                with session.begin_nested():
                    for start in range(0, len(requests), TENANT_BATCH):
                        made += submit_many(session, requests[start:start + TENANT_BATCH],
                                            source="schedule")
            except TenantRefused as exc:
                # A tenant was suspended between our read and the insert: try the slot again
                # next tick, when it is no longer among the active ones.
                session.rollback()
                log.warning("schedule %s slot %s deferred: %s", row["name"], slot, exc)
                return None
            except IntentRefused as exc:
                refusal = str(exc)
                # Messages queued by an earlier batch belong to rows the savepoint took back.
                forget_after_commit(session)
        store.finish_slot(session, claimed, jobs=len(made),
                          status="refused" if refusal else "fired", error=refusal)
        session.commit()  # the jobs' messages go out once this commits
    if refusal:
        log.error("schedule %s slot %s refused: %s", row["name"], slot.isoformat(), refusal)
        return SlotOutcome(row["name"], slot, "refused", skipped=len(due.skipped), error=refusal)
    log.info("schedule %s slot %s fired: %d job(s)", row["name"], slot.isoformat(), len(made))
    return SlotOutcome(row["name"], slot, "fired", jobs=len(made), skipped=len(due.skipped))


def _tenants_and_refusal(session, row: Mapping[str, Any]) -> tuple[list[str], str | None]:
    problem = intent_problem(row["intent_key"], row["intent_params"])
    if problem is not None:
        return [], problem
    if row["tenant_id"] is None:
        return tenants.active_tenant_ids(session), None
    status = tenants.status_of(session, row["tenant_id"])
    if status != "active":
        return [], f"tenant {row['tenant_id']} is {status}; its jobs are refused"
    return [row["tenant_id"]], None


def _report_broken(row: Mapping[str, Any], exc: Exception) -> None:
    # Once per process and definition: the tick comes every few seconds.
    key = (row["id"], row["cron"], row["timezone"])
    if key not in _reported_broken:
        _reported_broken.add(key)
        log.error("schedule %s cannot fire: cron %r in %s: %s", row["name"], row["cron"],
                  row["timezone"], exc)



class ScheduleExists(ScheduleError):
    """A schedule of that name exists already."""


@dataclass(frozen=True)
class ScheduleView:
    id: str
    name: str
    tenant_id: str | None
    tenant_name: str | None
    intent_key: str
    intent_params: Any
    cron: str
    timezone: str
    enabled: bool
    description: str | None
    slots_done_until: dt.datetime
    last_slot_at: dt.datetime | None
    last_status: str | None
    last_jobs: int | None
    last_error: str | None

    def next_slot(self) -> dt.datetime | None:
        """When it fires next (None when paused or its cron is broken)."""
        if not self.enabled:
            return None
        try:
            after = max(self.slots_done_until, dt.datetime.now(dt.UTC))
            return next_slot(self.cron, self.timezone, after)
        except (ScheduleError, ValueError):  # croniter's errors are ValueErrors
            return None


def add_schedule(conn, *, name: str, intent_key: str, cron: str, tenant_id: str | None = None,
                 intent_params: Mapping[str, Any] | None = None,
                 timezone: str = DEFAULT_TIMEZONE, description: str | None = None,
                 enabled: bool = True) -> str:
    """Validate and insert a schedule; its first slot is the first one after now."""
    name = name.strip()
    if not name:
        raise ScheduleError("a schedule needs a name")
    cron = validate_cron(cron)
    zone(timezone)
    if tenant_id is not None:
        try:
            tenant_id = str(uuid.UUID(str(tenant_id)))
        except ValueError:
            raise ScheduleError(f"tenant {tenant_id!r} is not a UUID") from None
    try:
        with conn.begin_nested():
            return store.insert(conn, name=name, tenant_id=tenant_id, intent_key=intent_key,
                                intent_params=intent_params or {}, cron=cron,
                                timezone=timezone, enabled=enabled, description=description)
    except IntegrityError as exc:
        constraint = getattr(getattr(exc.orig, "diag", None), "constraint_name", None)
        if constraint == "uq_job_schedules_name":
            raise ScheduleExists(f"a schedule named {name!r} exists already") from None
        if constraint == "fk_job_schedules_tenant_id_tenants":
            raise ScheduleError(f"unknown tenant {tenant_id}") from None
        raise


def list_schedules(conn) -> list[ScheduleView]:
    return [ScheduleView(**r) for r in store.rows(conn)]


def ensure_default_schedules(conn, defaults: Iterable[Schedule] | None = None) -> list[str]:
    """Create whichever of the manifest's schedules (``SCHEDULES``) is missing, by name; the
    names created."""
    existing = store.names(conn)
    created = []
    for default in manifest.schedules if defaults is None else defaults:
        if default.name in existing:
            continue
        try:
            add_schedule(conn, name=default.name, intent_key=default.intent_key,
                         cron=default.cron, timezone=default.timezone,
                         intent_params=default.intent_params, description=default.description)
        except ScheduleExists:  # created by someone else meanwhile
            continue
        created.append(default.name)
    return created
