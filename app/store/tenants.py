"""Every statement about tenants (academies): listing them with their recent jobs, finding one
by id, id prefix or name, creating one, changing its status (recorded with who did it), the
status checks intake and the schedules make, and the names shown beside a job in Flower.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Iterable
from typing import Any

from sqlalchemy import text

from app.store import db

#: A tenant's status, or no row: whether its new work is taken.
TENANT_STATUS = text("SELECT status FROM tenants WHERE id = CAST(:id AS uuid)")

#: The active tenants, oldest first (a schedule without a tenant fires for each).
ACTIVE_TENANTS = text(
    "SELECT id::text FROM tenants WHERE status = 'active' ORDER BY created_at, id")


def status_of(conn, tenant_id: str) -> str | None:
    """The tenant's status, or None when there is no such tenant."""
    row = conn.execute(TENANT_STATUS, {"id": tenant_id}).first()
    return row[0] if row else None


TENANT_STATUSES = text(
    "SELECT id::text, status FROM tenants WHERE id = ANY(CAST(:ids AS uuid[]))")


def statuses_of(conn, tenant_ids: Iterable[str]) -> dict[str, str]:
    """Each known tenant's status, in one statement (unknown ones are left out)."""
    ids = sorted(set(tenant_ids))
    if not ids:
        return {}
    return {r[0]: r[1] for r in conn.execute(TENANT_STATUSES, {"ids": ids})}


def active_tenant_ids(conn) -> list[str]:
    return list(conn.execute(ACTIVE_TENANTS).scalars())


#: Every tenant with its jobs of the last day (counted on the tenant's own index range), and
#: what it has waiting and running now with its fair-scheduling limits.
LIST_TENANTS = text(
    """
    SELECT t.id::text AS id, t.name, t.status, t.created_at,
           day.total AS jobs_24h, day.failed AS failed_24h,
           t.weight, t.max_running, now_.backlog, now_.running, now_.oldest_wait_s,
           t.keep_completed_days, t.keep_failed_days, t.keep_cancelled_days,
           coalesce((SELECT jsonb_object_agg(l.queue, l.max_running)
                       FROM tenant_queue_limits l WHERE l.tenant_id = t.id), '{}'::jsonb)
               AS queue_caps
      FROM tenants t
      CROSS JOIN LATERAL (
            SELECT count(*) AS total, count(*) FILTER (WHERE j.status = 'failed') AS failed
              FROM job_executions j
             WHERE j.tenant_id = t.id AND j.created_at >= now() - interval '24 hours'
      ) day
      CROSS JOIN LATERAL (
            SELECT count(*) FILTER (WHERE j.status = 'pending') AS backlog,
                   count(*) FILTER (WHERE j.status = 'processing') AS running,
                   extract(epoch FROM now() - min(coalesce(j.run_at, j.created_at))
                           FILTER (WHERE j.status = 'pending'
                                   AND coalesce(j.run_at, j.created_at) <= now()))::float8
                       AS oldest_wait_s
              FROM job_executions j
             WHERE j.tenant_id = t.id AND j.status IN ('pending', 'processing')
      ) now_
     WHERE CAST(:status AS text) IS NULL OR t.status = CAST(:status AS text)
     ORDER BY t.created_at, t.name
    """
)

#: A tenant by its id.
FIND_TENANT_BY_ID = text(
    "SELECT id::text AS id, name, status FROM tenants WHERE id = CAST(:id AS uuid)"
)

#: Tenants whose id falls in a range (an id prefix), at most two (an ambiguity is reported).
FIND_TENANTS_BY_ID_RANGE = text(
    """
    SELECT id::text AS id, name, status FROM tenants
     WHERE id BETWEEN CAST(:lo AS uuid) AND CAST(:hi AS uuid) ORDER BY id LIMIT 2
    """
)

#: Tenants by their exact name (names are not unique: the caller reports an ambiguity).
FIND_TENANTS_BY_NAME = text(
    "SELECT id::text AS id, name, status FROM tenants WHERE name = :name ORDER BY created_at LIMIT 2"
)

#: Every name of a tenant not deleted, for a "did you mean" when one is mistyped.
LIVE_TENANT_NAMES = text("SELECT DISTINCT name FROM tenants WHERE status <> 'deleted'")

#: A new tenant; returns its id.
CREATE_TENANT = text("INSERT INTO tenants (name) VALUES (:name) RETURNING id::text")

#: Suspend, resume or delete a tenant, recording who did it; returns the status it had. A
#: deleted tenant stays deleted (its status is not changed again).
SET_TENANT_STATUS = text(
    """
    WITH before AS (
        SELECT id, status FROM tenants WHERE id = CAST(:id AS uuid) FOR UPDATE
    ), changed AS (
        UPDATE tenants t SET status = :status
          FROM before
         WHERE t.id = before.id AND before.status <> :status AND before.status <> 'deleted'
        RETURNING t.id, before.status AS was
    ), event AS (
        INSERT INTO tenant_events (tenant_id, kind, was, by, detail)
        SELECT id, :kind, was, :by, CAST(:detail AS jsonb) FROM changed
    )
    SELECT status FROM before
    """
)

#: What a status change is called in ``tenant_events``.
TENANT_EVENT_KINDS = {"active": "resumed", "suspended": "suspended", "deleted": "deleted"}

#: A tenant's jobs still to run (held while it is suspended).
PENDING_JOBS = text(
    "SELECT count(*) FROM job_executions WHERE tenant_id = CAST(:id AS uuid) AND status = 'pending'"
)

#: A tenant's status changes, oldest first.
TENANT_EVENTS = text(
    """
    SELECT kind, was, by, detail, at FROM tenant_events
     WHERE tenant_id = CAST(:id AS uuid) ORDER BY at, id
    """
)


#: Academies' names by id.
TENANT_NAMES = text("SELECT id::text, name FROM tenants WHERE id = ANY(CAST(:ids AS uuid[]))")

#: Seconds a name read for Flower is used before it is read again: a rename shows within this.
NAME_TTL_SECONDS = 60.0
#: Names kept per process at most (an academy's name is read again after the cache is reset).
NAME_CACHE_SIZE = 10_000
_names: dict[str, tuple[str, float]] = {}
_names_lock = threading.Lock()


def academy_names(tenant_ids: Iterable[str]) -> dict[str, str]:
    """The names of these tenants for what Flower shows beside a job (``kwargsrepr``), from a
    per-process cache: the database is read only for ids not seen lately, on a connection of
    its own. A name that cannot be read is left out; publishing never waits on it."""
    now = time.monotonic()
    found: dict[str, str] = {}
    missing: list[str] = []
    with _names_lock:
        for tenant_id in set(tenant_ids):
            cached = _names.get(tenant_id)
            if cached is not None and now - cached[1] < NAME_TTL_SECONDS:
                found[tenant_id] = cached[0]
            else:
                missing.append(tenant_id)
    if missing:
        read: dict[str, str] = {}
        with contextlib.suppress(Exception), db.engine().connect() as conn:
            read = {row[0]: row[1] for row in conn.execute(TENANT_NAMES, {"ids": missing})}
        with _names_lock:
            if len(_names) + len(read) > NAME_CACHE_SIZE:
                _names.clear()
            _names.update((tenant_id, (name, now)) for tenant_id, name in read.items())
        found.update(read)
    return found


def list_tenants(conn, *, status: str | None = None) -> list[dict[str, Any]]:
    return [dict(r) for r in conn.execute(LIST_TENANTS, {"status": status}).mappings()]


def find_tenant_by_id(conn, tenant_id: str) -> dict[str, Any] | None:
    row = conn.execute(FIND_TENANT_BY_ID, {"id": tenant_id}).mappings().first()
    return dict(row) if row else None


def find_tenants_by_id_range(conn, lo: str, hi: str) -> list[dict[str, Any]]:
    return [dict(r) for r in conn.execute(FIND_TENANTS_BY_ID_RANGE, {"lo": lo, "hi": hi}).mappings()]


def find_tenants_by_name(conn, name: str) -> list[dict[str, Any]]:
    return [dict(r) for r in conn.execute(FIND_TENANTS_BY_NAME, {"name": name}).mappings()]


def tenant_names(conn) -> list[str]:
    return list(conn.execute(LIVE_TENANT_NAMES).scalars())


def create_tenant(conn, name: str) -> str:
    return conn.execute(CREATE_TENANT, {"name": name}).scalar_one()


def set_tenant_status(conn, tenant_id: str, status: str, *, by: str,
                      detail: dict[str, Any] | None = None) -> str | None:
    """The status the tenant had, or None when there is no such tenant; a change is recorded
    in ``tenant_events`` with ``by`` (nothing changes once a tenant is deleted)."""
    return conn.execute(SET_TENANT_STATUS, {
        "id": tenant_id, "status": status, "kind": TENANT_EVENT_KINDS[status], "by": by,
        "detail": json.dumps(detail) if detail is not None else None}).scalar()


def pending_jobs(conn, tenant_id: str) -> int:
    return conn.execute(PENDING_JOBS, {"id": tenant_id}).scalar_one()


def tenant_events(conn, tenant_id: str) -> list[dict[str, Any]]:
    return [dict(r) for r in conn.execute(TENANT_EVENTS, {"id": tenant_id}).mappings()]


# --- fair scheduling: limits ----------------------------------------------------------------------

#: Change a tenant's weight and cap across queues (NULL arguments keep what is there;
#: ``:clear_cap`` removes the cap), recording the change with who made it; the limits before.
SET_LIMITS = text(
    """
    WITH before AS (
        SELECT id, weight, max_running FROM tenants WHERE id = CAST(:id AS uuid) FOR UPDATE
    ), changed AS (
        UPDATE tenants t
           SET weight = coalesce(CAST(:weight AS float8), t.weight),
               max_running = CASE WHEN :clear_cap THEN NULL
                                  ELSE coalesce(CAST(:max_running AS int), t.max_running) END
          FROM before WHERE t.id = before.id
        RETURNING t.id, t.weight, t.max_running, before.weight AS old_weight,
                  before.max_running AS old_max_running
    ), event AS (
        INSERT INTO tenant_events (tenant_id, kind, was, by, detail)
        SELECT id, 'limits', 'weight ' || old_weight || ', max running '
                             || coalesce(old_max_running::text, 'unlimited'), :by,
               jsonb_build_object('weight', weight, 'max_running', max_running,
                                  'was', jsonb_build_object('weight', old_weight,
                                                            'max_running', old_max_running))
          FROM changed
         WHERE (weight, max_running) IS DISTINCT FROM (old_weight, old_max_running)
    )
    SELECT old_weight, old_max_running, weight, max_running FROM changed
    """
)

#: Set or remove (``:max_running`` NULL) a tenant's cap on one queue, recorded likewise.
SET_QUEUE_LIMIT = text(
    """
    WITH before AS (
        SELECT max_running FROM tenant_queue_limits
         WHERE tenant_id = CAST(:id AS uuid) AND queue = :queue
    ), removed AS (
        DELETE FROM tenant_queue_limits
         WHERE tenant_id = CAST(:id AS uuid) AND queue = :queue
           AND CAST(:max_running AS int) IS NULL
    ), upserted AS (
        INSERT INTO tenant_queue_limits (tenant_id, queue, max_running)
        SELECT CAST(:id AS uuid), :queue, CAST(:max_running AS int)
         WHERE CAST(:max_running AS int) IS NOT NULL
        ON CONFLICT (tenant_id, queue) DO UPDATE SET max_running = excluded.max_running
    ), event AS (
        INSERT INTO tenant_events (tenant_id, kind, was, by, detail)
        SELECT CAST(:id AS uuid), 'limits',
               'max running on ' || :queue || ' '
               || coalesce((SELECT max_running::text FROM before), 'unlimited'), :by,
               jsonb_build_object('queue', :queue, 'max_running', CAST(:max_running AS int),
                                  'was', (SELECT max_running FROM before))
         WHERE (SELECT max_running FROM before) IS DISTINCT FROM CAST(:max_running AS int)
    )
    SELECT (SELECT max_running FROM before)
    """
)

#: A tenant's limits on single queues.
QUEUE_LIMITS = text(
    "SELECT queue, max_running FROM tenant_queue_limits WHERE tenant_id = CAST(:id AS uuid) "
    "ORDER BY queue"
)


def set_limits(conn, tenant_id: str, *, by: str, weight: float | None = None,
               max_running: int | None = None, clear_cap: bool = False
               ) -> tuple[float, int | None, float, int | None] | None:
    """``(old weight, old cap, weight, cap)``, or None when there is no such tenant."""
    row = conn.execute(SET_LIMITS, {"id": tenant_id, "weight": weight,
                                    "max_running": max_running, "clear_cap": clear_cap,
                                    "by": by}).first()
    return tuple(row) if row else None


def set_queue_limit(conn, tenant_id: str, queue: str, max_running: int | None, *,
                    by: str) -> int | None:
    """Cap (or with None, uncap) ``tenant_id`` on ``queue``; the cap it had."""
    return conn.execute(SET_QUEUE_LIMIT, {"id": tenant_id, "queue": queue,
                                          "max_running": max_running, "by": by}).scalar()


def queue_limits(conn, tenant_id: str) -> dict[str, int]:
    return {r[0]: r[1] for r in conn.execute(QUEUE_LIMITS, {"id": tenant_id})}


# --- retention: days an academy keeps its finished jobs per end state ---------------------------

#: Change a tenant's days kept per end state (NULL arguments keep what is there, 0 returns a
#: state to the default), recording the change with who made it; the rules before and after.
SET_RETENTION = text(
    """
    WITH before AS (
        SELECT id, keep_completed_days, keep_failed_days, keep_cancelled_days
          FROM tenants WHERE id = CAST(:id AS uuid) FOR UPDATE
    ), changed AS (
        UPDATE tenants t
           SET keep_completed_days = CASE CAST(:completed AS int) WHEN 0 THEN NULL
                   ELSE coalesce(CAST(:completed AS int), t.keep_completed_days) END,
               keep_failed_days = CASE CAST(:failed AS int) WHEN 0 THEN NULL
                   ELSE coalesce(CAST(:failed AS int), t.keep_failed_days) END,
               keep_cancelled_days = CASE CAST(:cancelled AS int) WHEN 0 THEN NULL
                   ELSE coalesce(CAST(:cancelled AS int), t.keep_cancelled_days) END
          FROM before WHERE t.id = before.id
        RETURNING t.id, t.keep_completed_days, t.keep_failed_days, t.keep_cancelled_days,
                  jsonb_build_object('completed', before.keep_completed_days,
                                     'failed', before.keep_failed_days,
                                     'cancelled', before.keep_cancelled_days) AS was
    ), event AS (
        INSERT INTO tenant_events (tenant_id, kind, was, by, detail)
        SELECT id, 'retention', 'kept days ' || was::text, :by,
               jsonb_build_object('completed', keep_completed_days, 'failed', keep_failed_days,
                                  'cancelled', keep_cancelled_days, 'was', was)
          FROM changed
         WHERE jsonb_build_object('completed', keep_completed_days, 'failed', keep_failed_days,
                                  'cancelled', keep_cancelled_days) IS DISTINCT FROM was
    )
    SELECT keep_completed_days, keep_failed_days, keep_cancelled_days FROM changed
    """
)


def set_retention(conn, tenant_id: str, *, by: str, completed: int | None = None,
                  failed: int | None = None, cancelled: int | None = None
                  ) -> dict[str, int | None] | None:
    """The tenant's own days per end state after the change (None: the default), or None when
    there is no such tenant."""
    row = conn.execute(SET_RETENTION, {"id": tenant_id, "completed": completed, "failed": failed,
                                       "cancelled": cancelled, "by": by}).first()
    if row is None:
        return None
    return {"completed": row[0], "failed": row[1], "cancelled": row[2]}
