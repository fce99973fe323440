"""Schedules: periodic intents in ``job_schedules``, each due cron slot fired exactly once.

Beat's ``jobq.fire_schedules`` calls :func:`fire_due` every ``JOBQ_SCHEDULE_INTERVAL``; it reads
the table afresh each time, so adding, pausing or removing a schedule needs no beat restart. A
slot becomes one job per tenant (idempotency key ``schedule:<id>:<slot>``, ``run_at`` the slot).
Two beats cannot fire a slot twice: the schedule row is locked while its slot is handled, the
(schedule, slot) run record is unique, and so is each job's idempotency key.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import CroniterError, croniter
from sqlalchemy import DateTime, bindparam, text
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.exc import IntegrityError

from app import db

log = logging.getLogger("jobq.schedules")

DEFAULT_TIMEZONE = "Asia/Seoul"
#: Missed slots recorded as skipped per firing, at most: a per-second test cron after a day of
#: beat downtime would otherwise write 86,400 rows. Older ones are only counted in the log.
MAX_SKIPPED_RECORDED = 100
#: Tenants per ``submit_many`` statement when a schedule fires for every active tenant.
TENANT_BATCH = 1000


class ScheduleError(ValueError):
    """A schedule's definition is not valid; the message says which part and why."""


@dataclass(frozen=True)
class DefaultSchedule:
    name: str
    intent_key: str
    cron: str
    description: str
    timezone: str = DEFAULT_TIMEZONE
    intent_params: Mapping[str, Any] = field(default_factory=dict)


#: The periodic work every installation has; the first migration writes the same rows.
DEFAULT_SCHEDULES: tuple[DefaultSchedule, ...] = (
    DefaultSchedule(
        "monthly-settlement", "billing.exec.monthly_settlement", "0 2 1 * *",
        "Monthly settlement of every active academy: the 1st of the month, 02:00",
    ),
    DefaultSchedule(
        "weekly-attendance-report", "report.exec.weekly_attendance", "0 7 * * 1",
        "Weekly attendance report of every active academy: Mondays, 07:00",
    ),
)


# --- cron slots: pure functions of the expression and the clock ----------------------------------


def zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ScheduleError(f"unknown timezone {name!r} (e.g. Asia/Seoul, UTC)") from None


def validate_cron(cron: str) -> str:
    """The expression, stripped; :class:`ScheduleError` if it is not one croniter can fire.

    Five fields (minute hour day month weekday) or six, the sixth being seconds.
    """
    cron = " ".join(cron.split())
    try:
        walk = croniter(cron, dt.datetime.now(dt.UTC))
    except CroniterError as exc:
        raise ScheduleError(
            f"invalid cron expression {cron!r} ({exc}): use 5 fields 'minute hour day month "
            "weekday' (e.g. '0 2 1 * *'), or 6 with seconds last"
        ) from None
    try:  # valid syntax can still name a date that never comes, e.g. '0 0 30 2 *'
        walk.get_next(dt.datetime)
    except CroniterError as exc:
        raise ScheduleError(f"cron expression {cron!r} never fires: {exc}") from None
    return cron


def next_slot(cron: str, timezone: str, after: dt.datetime) -> dt.datetime:
    """The first slot strictly after ``after``, in UTC."""
    return croniter(cron, after.astimezone(zone(timezone))).get_next(dt.datetime).astimezone(dt.UTC)


@dataclass(frozen=True)
class DueSlots:
    """What a schedule owes at a moment: the one slot to fire, and the older ones it skips."""

    latest: dt.datetime | None
    #: Missed slots older than ``latest``, newest first, at most ``MAX_SKIPPED_RECORDED``.
    skipped: tuple[dt.datetime, ...] = ()
    #: More missed slots lie before the recorded ones.
    more_skipped: bool = False


def due_slots(cron: str, timezone: str, *, done_until: dt.datetime, now: dt.datetime,
              max_skipped: int = MAX_SKIPPED_RECORDED) -> DueSlots:
    """Slots in ``(done_until, now]``: the latest fires, older ones (beat was down) are skipped.

    Cron is evaluated in ``timezone`` (a Seoul 02:00 is 17:00 UTC); the slots come back in UTC.
    Walking back from ``now`` keeps the work bounded however long beat was away.
    """
    tz = zone(timezone)
    # get_prev is strictly before its start; a microsecond later makes a slot at `now` count.
    latest = croniter(cron, now.astimezone(tz) + dt.timedelta(microseconds=1)).get_prev(dt.datetime)
    if latest <= done_until:
        return DueSlots(None)
    walk = croniter(cron, latest)
    skipped: list[dt.datetime] = []
    more = False
    while True:
        earlier = walk.get_prev(dt.datetime)
        if earlier <= done_until:
            break
        if len(skipped) == max_skipped:
            more = True
            break
        skipped.append(earlier.astimezone(dt.UTC))
    return DueSlots(latest.astimezone(dt.UTC), tuple(skipped), more)


def idempotency_key(schedule_id: str, slot: dt.datetime) -> str:
    """The key that makes a slot's job for a tenant exist once."""
    return f"schedule:{schedule_id}:{slot.astimezone(dt.UTC).strftime('%Y-%m-%dT%H:%M:%SZ')}"


def intent_problem(intent_key: str, intent_params: Any) -> str | None:
    """Why jobs of ``intent_key`` with these parameters would be refused, or None."""
    from app.registry import manifest

    intent = manifest.get(intent_key)
    if intent is None:
        hint = manifest.suggest(intent_key)
        return (f"unknown intent key {intent_key!r}: no handler in the manifest"
                + (f" (did you mean {', '.join(map(repr, hint))}?)" if hint else ""))
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


# --- firing --------------------------------------------------------------------------------------

#: Enabled schedules, by name: the candidates of one tick.
LIST_ENABLED = text("SELECT id::text FROM job_schedules WHERE enabled ORDER BY name")

#: Take one schedule for this tick; a schedule another beat is handling is skipped, not waited on.
LOCK_SCHEDULE = text(
    """
    SELECT id::text, name, tenant_id::text, intent_key, intent_params, cron, timezone,
           slots_done_until, now() AS now
      FROM job_schedules
     WHERE id = CAST(:id AS uuid) AND enabled
       FOR UPDATE SKIP LOCKED
    """
)

#: Missed slots that a later slot replaces.
RECORD_SKIPPED = text(
    """
    INSERT INTO job_schedule_runs (schedule_id, slot_at, status)
    SELECT CAST(:id AS uuid), slot, 'skipped' FROM unnest(:slots) AS slot
    ON CONFLICT (schedule_id, slot_at) DO NOTHING
    """
).bindparams(bindparam("slots", type_=ARRAY(DateTime(timezone=True))))

#: Claim a slot; nothing comes back when it was handled already.
CLAIM_SLOT = text(
    """
    INSERT INTO job_schedule_runs (schedule_id, slot_at, status, error)
    VALUES (CAST(:id AS uuid), :slot, :status, :error)
    ON CONFLICT (schedule_id, slot_at) DO NOTHING
    RETURNING id
    """
)

#: How many jobs a fired slot made (or found made), or why it was refused after all.
FINISH_SLOT = text(
    "UPDATE job_schedule_runs SET jobs = :jobs, status = :status, error = :error WHERE id = :run"
)

#: Slots up to here are dealt with.
ADVANCE = text(
    """
    UPDATE job_schedules SET slots_done_until = :slot
     WHERE id = CAST(:id AS uuid) AND slots_done_until < :slot
    """
)

ACTIVE_TENANTS = text("SELECT id::text FROM tenants WHERE status = 'active' ORDER BY created_at, id")
TENANT_STATUS = text("SELECT status FROM tenants WHERE id = CAST(:id AS uuid)")


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
        ids = list(conn.execute(LIST_ENABLED).scalars())
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
    from app.dispatch import Request, submit_many
    from app.errors import IntentRefused, TenantRefused

    with db.session() as session:
        row = session.execute(LOCK_SCHEDULE, {"id": schedule_id}).mappings().first()
        if row is None:  # another beat holds it, or it was paused or removed just now
            return None
        clock = now or row["now"]
        try:
            due = due_slots(row["cron"], row["timezone"], done_until=row["slots_done_until"],
                            now=clock)
        except (ScheduleError, CroniterError, ValueError) as exc:
            _report_broken(row, exc)
            return None
        if due.latest is None:
            return None
        slot = due.latest
        if due.skipped:
            session.execute(RECORD_SKIPPED, {"id": schedule_id, "slots": list(due.skipped)})
            log.warning("schedule %s: %d%s missed slot(s) skipped, the latest (%s) fires",
                        row["name"], len(due.skipped), "+" if due.more_skipped else "",
                        slot.isoformat())
        tenants, refusal = _tenants_and_refusal(session, row)
        claimed = session.execute(CLAIM_SLOT, {
            "id": schedule_id, "slot": slot, "status": "refused" if refusal else "fired",
            "error": refusal,
        }).scalar()
        session.execute(ADVANCE, {"id": schedule_id, "slot": slot})
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
                session.info.pop("jobq_outgoing", None)
        session.execute(FINISH_SLOT, {"run": claimed, "jobs": len(made),
                                      "status": "refused" if refusal else "fired",
                                      "error": refusal})
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
        return list(session.execute(ACTIVE_TENANTS).scalars()), None
    status = session.execute(TENANT_STATUS, {"id": row["tenant_id"]}).scalar()
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


# --- managing schedules (the CLI) ---------------------------------------------------------------


class ScheduleExists(ScheduleError):
    """A schedule of that name exists already."""


#: A schedule by name or id.
_REF = "(name = :ref OR id::text = :ref)"

INSERT_SCHEDULE = text(
    """
    INSERT INTO job_schedules (name, tenant_id, intent_key, intent_params, cron, timezone,
                               enabled, description)
    VALUES (:name, CAST(:tenant_id AS uuid), :intent_key, CAST(:intent_params AS jsonb), :cron,
            :timezone, :enabled, :description)
    RETURNING id::text
    """
)
#: Pause: nothing fires until resumed.
PAUSE = text(
    f"UPDATE job_schedules SET enabled = false, updated_at = now() WHERE {_REF} RETURNING name"
)
#: Resume: slots that passed while paused stay unfired; the next one fires.
RESUME = text(
    f"""
    UPDATE job_schedules
       SET slots_done_until = CASE WHEN enabled THEN slots_done_until
                                   ELSE greatest(slots_done_until, now()) END,
           enabled = true, updated_at = now()
     WHERE {_REF}
    RETURNING name
    """
)
DELETE_SCHEDULE = text(f"DELETE FROM job_schedules WHERE {_REF} RETURNING name")

LIST_SCHEDULES = text(
    """
    SELECT s.id::text, s.name, s.tenant_id::text, t.name AS tenant_name, s.intent_key,
           s.intent_params, s.cron, s.timezone, s.enabled, s.description, s.slots_done_until,
           r.slot_at AS last_slot_at, r.status AS last_status, r.jobs AS last_jobs,
           r.error AS last_error
      FROM job_schedules s
      LEFT JOIN tenants t ON t.id = s.tenant_id
      LEFT JOIN LATERAL (
            SELECT slot_at, status, jobs, error FROM job_schedule_runs
             WHERE schedule_id = s.id AND status <> 'skipped'
             ORDER BY slot_at DESC LIMIT 1) r ON true
     ORDER BY s.name
    """
)

#: Schedule runs older than the retention age, except each schedule's latest few.
DELETE_OLD_RUNS = text(
    """
    DELETE FROM job_schedule_runs WHERE id IN (
        SELECT r.id FROM job_schedule_runs r
         WHERE r.at < now() - make_interval(days => :days)
           AND EXISTS (SELECT 1 FROM job_schedule_runs n
                        WHERE n.schedule_id = r.schedule_id AND n.slot_at > r.slot_at)
         LIMIT :batch)
    """
)


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
        except (ScheduleError, CroniterError, ValueError):
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
            return conn.execute(INSERT_SCHEDULE, {
                "name": name, "tenant_id": tenant_id, "intent_key": intent_key,
                "intent_params": json.dumps(dict(intent_params or {}), ensure_ascii=False),
                "cron": cron, "timezone": timezone, "enabled": enabled,
                "description": description,
            }).scalar_one()
    except IntegrityError as exc:
        constraint = getattr(getattr(exc.orig, "diag", None), "constraint_name", None)
        if constraint == "uq_job_schedules_name":
            raise ScheduleExists(f"a schedule named {name!r} exists already") from None
        if constraint == "fk_job_schedules_tenant_id_tenants":
            raise ScheduleError(f"unknown tenant {tenant_id}") from None
        raise


def pause(conn, ref: str) -> str | None:
    """Pause a schedule by name or id; its name, or None when there is no such schedule."""
    return conn.execute(PAUSE, {"ref": ref}).scalar()


def resume(conn, ref: str) -> str | None:
    return conn.execute(RESUME, {"ref": ref}).scalar()


def remove(conn, ref: str) -> str | None:
    """Delete a schedule and its run history; its jobs stay."""
    return conn.execute(DELETE_SCHEDULE, {"ref": ref}).scalar()


def list_schedules(conn) -> list[ScheduleView]:
    return [ScheduleView(**r) for r in conn.execute(LIST_SCHEDULES).mappings()]


def ensure_default_schedules(conn) -> list[str]:
    """Create whichever default schedule is missing (by name); the names created."""
    existing = set(conn.execute(text("SELECT name FROM job_schedules")).scalars())
    created = []
    for default in DEFAULT_SCHEDULES:
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


def delete_old_runs(conn, *, days: int, batch: int) -> int:
    return conn.execute(DELETE_OLD_RUNS, {"days": days, "batch": batch}).rowcount

