"""Creating jobs: the insert of new rows (a refused request's row too) and the job an id or an
idempotency key already names. The ``created`` event of a new row comes from a trigger
(app/store/schema.sql), so a plain ``INSERT INTO job_executions`` from outside gets one too."""

from __future__ import annotations

import datetime as dt
import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import text

#: Insert new jobs of active tenants; a conflicting id or idempotency key inserts nothing.
#: A job asked to be published at once is stamped so (the caller publishes it after commit)
#: only while its queue has nobody waiting, its tenant has no cap and the queue's window in the
#: broker has room (``jobq_fast_room``, once per queue and tenant); the others wait in the
#: table for the fairness feeder (app.run.feeder), which the insert's trigger wakes. The room
#: is the queue's, shared by the batch's tenants in the batch's order: counted per tenant, a
#: batch of one job each over 1,000 academies put all 1,000 in the broker with the insert,
#: against a window of 64 (``python -m bench academies``).
INSERT_JOBS = text(
    """
    WITH v AS (
        SELECT v.*, row_number() OVER () AS pos
          FROM jsonb_to_recordset(CAST(:rows AS jsonb)) AS v(
                id uuid, tenant_id uuid, intent_key text, intent_params jsonb, status text,
                max_retries int, run_at timestamptz, publish boolean, idempotency_key text,
                queue text, source text, parent_id uuid, error_message text, requested_by text,
                approval_seconds float8, params_dropped boolean, request_hash text,
                traceparent text)
    ), room AS (
        SELECT q.queue, q.tenant_id, jobq_fast_room(q.queue, q.tenant_id, :window) AS n
          FROM (SELECT DISTINCT queue, tenant_id FROM v WHERE publish) q
    ), fits AS (
        -- The rows that may skip the line: their tenant may (room.n > 0, the queue's room).
        SELECT v.*, v.publish AND coalesce(room.n, 0) > 0 AS may, coalesce(room.n, 0) AS n
          FROM v LEFT JOIN room ON room.queue = v.queue AND room.tenant_id = v.tenant_id
    ), r AS (
        SELECT fits.*, fits.may AND row_number() OVER (
                   PARTITION BY fits.queue, fits.may ORDER BY fits.pos
               ) <= fits.n AS go
          FROM fits
    )
    INSERT INTO job_executions (
        id, tenant_id, intent_key, intent_params, status, max_retries, run_at,
        published_at, idempotency_key, queue, source, parent_id, error_message, completed_at,
        requested_by, approval_expires_at, params_dropped, request_hash, traceparent
    )
    SELECT r.id, r.tenant_id, r.intent_key, r.intent_params, r.status, r.max_retries, r.run_at,
           CASE WHEN r.go THEN now() END,
           r.idempotency_key, r.queue, r.source, r.parent_id, r.error_message,
           CASE WHEN r.status = 'failed' THEN now() END,
           r.requested_by,
           CASE WHEN r.status = 'awaiting_approval'
                THEN now() + make_interval(secs => r.approval_seconds) END,
           coalesce(r.params_dropped, false), r.request_hash, r.traceparent
      FROM r
      JOIN tenants t ON t.id = r.tenant_id AND t.status = 'active'
     ORDER BY r.pos
    ON CONFLICT DO NOTHING
    RETURNING id::text, published_at IS NOT NULL, created_at, approval_expires_at
    """
)

#: The job an id or (else) an idempotency key of the tenant already names, with what it asked for.
FIND_EXISTING = text(
    """
    SELECT id::text, status, published_at IS NOT NULL AS published,
           id = CAST(:id AS uuid) AS same_id, intent_key, intent_params, run_at, request_hash
      FROM job_executions
     WHERE id = CAST(:id AS uuid)
        OR (idempotency_key = :idempotency_key AND tenant_id = CAST(:tenant_id AS uuid))
     ORDER BY id = CAST(:id AS uuid) DESC
     LIMIT 1
    """
)


@dataclass(frozen=True)
class NewJob:
    id: str
    tenant_id: str
    intent_key: str
    intent_params: Any
    max_retries: int
    queue: str | None
    source: str
    run_at: dt.datetime | None = None
    idempotency_key: str | None = None
    parent_id: str | None = None
    #: Set for a refused request: the row is written ``failed`` with this message.
    error_message: str | None = None
    #: The caller publishes right after commit (stamps ``published_at``).
    publish: bool = False
    #: Who asked (``api:web``, a JWT subject, ``cli:user@host``); named in the created event.
    requested_by: str | None = None
    #: Seconds the job waits for an approval before it expires; None: it needs none.
    approval_seconds: float | None = None
    #: A refused request's parameters could not be stored: it runs only on new ones.
    params_dropped: bool = False
    #: What a repeat under ``idempotency_key`` must match (request_fingerprint).
    request_hash: str | None = None
    #: The W3C traceparent its runs' spans join (None: tracing is off here).
    traceparent: str | None = None

    @property
    def awaiting_approval(self) -> bool:
        return self.approval_seconds is not None and not self.error_message

    def as_row(self) -> dict[str, Any]:
        status = ("failed" if self.error_message
                  else "awaiting_approval" if self.awaiting_approval else "pending")
        row = {
            "id": self.id,
            "tenant_id": self.tenant_id,
            "intent_key": self.intent_key,
            "intent_params": self.intent_params,
            "status": status,
            "requested_by": self.requested_by,
            "approval_seconds": self.approval_seconds,
            "max_retries": self.max_retries,
            "run_at": self.run_at.isoformat() if self.run_at else None,
            "publish": self.publish and status == "pending",
            "idempotency_key": self.idempotency_key,
            "queue": self.queue,
            "source": self.source,
            "parent_id": self.parent_id,
            "error_message": self.error_message,
            "params_dropped": self.params_dropped,
            "request_hash": self.request_hash,
        }
        if self.traceparent is not None:  # a missing key reads as NULL: no cost when off
            row["traceparent"] = self.traceparent
        return row


def insert_jobs(conn, jobs: Sequence[NewJob], *, window: int
                ) -> dict[str, tuple[bool, dt.datetime, dt.datetime | None]]:
    """Insert ``jobs`` in one statement; the ids that were new, each with whether to publish
    it now (the others wait for the fairness feeder), its ``created_at`` and
    ``approval_expires_at`` (the database's clock). ``window``: the broker's window per queue
    until a feeder has sized it."""
    if not jobs:
        return {}
    rows = json.dumps([j.as_row() for j in jobs], ensure_ascii=False, default=str)
    return {r[0]: (r[1], r[2], r[3])
            for r in conn.execute(INSERT_JOBS, {"rows": rows, "window": window})}


@dataclass(frozen=True)
class Existing:
    """The job that made a new one a duplicate, and what it asked for."""

    id: str
    status: str
    published: bool
    #: The same id (a redelivered dispatch), not only the same idempotency key.
    same_id: bool
    intent_key: str
    intent_params: Any
    run_at: dt.datetime | None
    request_hash: str | None


def find_existing(conn, job: NewJob) -> Existing | None:
    """The job that made ``job`` a duplicate: its id, or else its idempotency key."""
    row = conn.execute(
        FIND_EXISTING,
        {"id": job.id, "idempotency_key": job.idempotency_key, "tenant_id": job.tenant_id},
    ).first()
    return Existing(*row) if row else None


def new_id() -> str:
    return str(uuid.uuid4())
