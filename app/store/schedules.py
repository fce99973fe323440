"""Every statement about schedules: the tick's candidates, locking one, recording fired and
skipped slots, moving its watermark; adding, pausing, resuming, removing and listing them."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from sqlalchemy import DateTime, bindparam, text
from sqlalchemy.dialects.postgresql import ARRAY

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



#: A schedule just added: its cron, watermark and its tenant's status.
ADDED = text(
    """
    SELECT s.cron, s.slots_done_until, t.status FROM job_schedules s
      LEFT JOIN tenants t ON t.id = s.tenant_id WHERE s.id = CAST(:id AS uuid)
    """
)

#: The names of every schedule.
SCHEDULE_NAMES = text("SELECT name FROM job_schedules")


def enabled_ids(conn) -> list[str]:
    return list(conn.execute(LIST_ENABLED).scalars())


def lock(conn, schedule_id: str) -> Mapping[str, Any] | None:
    return conn.execute(LOCK_SCHEDULE, {"id": schedule_id}).mappings().first()


def record_skipped(conn, schedule_id: str, slots: list) -> None:
    conn.execute(RECORD_SKIPPED, {"id": schedule_id, "slots": slots})


def claim_slot(conn, schedule_id: str, slot, *, status: str, error: str | None) -> Any:
    """The run record's id, or None when the slot was handled before."""
    return conn.execute(CLAIM_SLOT, {"id": schedule_id, "slot": slot, "status": status,
                                     "error": error}).scalar()


def advance(conn, schedule_id: str, slot) -> None:
    conn.execute(ADVANCE, {"id": schedule_id, "slot": slot})


def finish_slot(conn, run: Any, *, jobs: int, status: str, error: str | None) -> None:
    conn.execute(FINISH_SLOT, {"run": run, "jobs": jobs, "status": status, "error": error})


def insert(conn, *, name: str, tenant_id: str | None, intent_key: str,
           intent_params: Mapping[str, Any], cron: str, timezone: str, enabled: bool,
           description: str | None) -> str:
    return conn.execute(INSERT_SCHEDULE, {
        "name": name, "tenant_id": tenant_id, "intent_key": intent_key,
        "intent_params": json.dumps(dict(intent_params), ensure_ascii=False),
        "cron": cron, "timezone": timezone, "enabled": enabled, "description": description,
    }).scalar_one()


def added(conn, schedule_id: str) -> Any:
    return conn.execute(ADDED, {"id": schedule_id}).one()


def pause(conn, ref: str) -> str | None:
    """Pause a schedule by name or id; its name, or None when there is no such schedule."""
    return conn.execute(PAUSE, {"ref": ref}).scalar()


def resume(conn, ref: str) -> str | None:
    return conn.execute(RESUME, {"ref": ref}).scalar()


def remove(conn, ref: str) -> str | None:
    """Delete a schedule and its run history; its jobs stay."""
    return conn.execute(DELETE_SCHEDULE, {"ref": ref}).scalar()


def rows(conn) -> list[dict[str, Any]]:
    return [dict(r) for r in conn.execute(LIST_SCHEDULES).mappings()]


def names(conn) -> set[str]:
    return set(conn.execute(SCHEDULE_NAMES).scalars())


def delete_old_runs(conn, *, days: int, batch: int) -> int:
    return conn.execute(DELETE_OLD_RUNS, {"days": days, "batch": batch}).rowcount
