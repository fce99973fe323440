"""The one module that writes ``job_executions`` and ``job_events``.

Every statement that changes a job's state is a named constant here, and each state change
lands in the same statement as its event, so the history can never disagree with the row.
Callers pass a connection or session and own the transaction. (The ``created`` event of a new
row is written by a trigger from the first migration, so a plain ``INSERT INTO
job_executions`` from outside gets one too.)

All times come from the database's clock, never the caller's.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Text, bindparam, text
from sqlalchemy.dialects.postgresql import ARRAY, JSONB, UUID

from app.store import liveness

log = logging.getLogger("jobq.audit")

# A run's claim tolerates this much clock skew between a Celery countdown and the database.
RUN_AT_SLACK = "interval '2 seconds'"

#: Why a job of a tenant that is not active does not run: "tenant … is suspended; its jobs
#: wait until it is resumed" or "tenant … is deleted; its jobs are refused" (SQL, over t).
_TENANT_REFUSAL = (
    "'tenant ' || t.id || ' is ' || t.status || CASE WHEN t.status = 'suspended' "
    "THEN '; its jobs wait until it is resumed' ELSE '; its jobs are refused' END"
)

_JSON = JSONB(none_as_null=True)
_IDS = ARRAY(UUID(as_uuid=False))


def _json(value: Any) -> str | None:
    return None if value is None else json.dumps(value, ensure_ascii=False, separators=(",", ":"))


# --- creating jobs ---------------------------------------------------------------------------

#: Insert new jobs of active tenants; a conflicting id or idempotency key inserts nothing.
#: A job asked to be published at once is stamped so (the caller publishes it after commit)
#: only while its queue has nobody waiting, its tenant has no cap and the queue's window in the
#: broker has room (``jobq_fast_room``, once per queue and tenant); the others wait in the
#: table for the fairness feeder (app.run.feeder), which the insert's trigger wakes.
INSERT_JOBS = text(
    """
    WITH v AS (
        SELECT v.*, row_number() OVER () AS pos
          FROM jsonb_to_recordset(CAST(:rows AS jsonb)) AS v(
                id uuid, tenant_id uuid, intent_key text, intent_params jsonb, status text,
                max_retries int, run_at timestamptz, publish boolean, idempotency_key text,
                queue text, source text, parent_id uuid, error_message text, requested_by text,
                approval_seconds float8, params_dropped boolean, request_hash text)
    ), room AS (
        SELECT q.queue, q.tenant_id, jobq_fast_room(q.queue, q.tenant_id, :window) AS n
          FROM (SELECT DISTINCT queue, tenant_id FROM v WHERE publish) q
    ), r AS (
        SELECT v.*, v.publish AND row_number() OVER (
                   PARTITION BY v.queue, v.tenant_id, v.publish ORDER BY v.pos
               ) <= coalesce(room.n, 0) AS go
          FROM v LEFT JOIN room ON room.queue = v.queue AND room.tenant_id = v.tenant_id
    )
    INSERT INTO job_executions (
        id, tenant_id, intent_key, intent_params, status, max_retries, run_at,
        published_at, idempotency_key, queue, source, parent_id, error_message, completed_at,
        requested_by, approval_expires_at, params_dropped, request_hash
    )
    SELECT r.id, r.tenant_id, r.intent_key, r.intent_params, r.status, r.max_retries, r.run_at,
           CASE WHEN r.go THEN now() END,
           r.idempotency_key, r.queue, r.source, r.parent_id, r.error_message,
           CASE WHEN r.status = 'failed' THEN now() END,
           r.requested_by,
           CASE WHEN r.status = 'awaiting_approval'
                THEN now() + make_interval(secs => r.approval_seconds) END,
           coalesce(r.params_dropped, false), r.request_hash
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

    @property
    def awaiting_approval(self) -> bool:
        return self.approval_seconds is not None and not self.error_message

    def as_row(self) -> dict[str, Any]:
        status = ("failed" if self.error_message
                  else "awaiting_approval" if self.awaiting_approval else "pending")
        return {
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


# --- running jobs ----------------------------------------------------------------------------

def _completing(rows: str) -> str:
    """CTEs ``done`` (runs marked completed) and ``done_events`` for the outcomes in ``rows``."""
    return f"""
    v AS (
        SELECT * FROM jsonb_to_recordset(CAST({rows} AS jsonb)) AS v(
            id uuid, owner text, worker text, attempt int, result jsonb, detail jsonb,
            finished_at timestamptz)
    ), done AS (
        UPDATE job_executions j
           SET status = 'completed', completed_at = greatest(v.finished_at, j.executed_at),
               result = v.result, error_message = NULL,
               lease_owner = NULL, lease_expires_at = NULL,
               progress = CASE WHEN j.progress IS NULL THEN NULL
                               ELSE j.progress || '{{"percent": 100}}'::jsonb END,
               updated_at = statement_timestamp()
          FROM v
         WHERE j.id = v.id AND j.status = 'processing' AND j.lease_owner = v.owner
        RETURNING j.id, v.attempt, v.worker, v.detail, j.completed_at
    ), done_events AS (
        INSERT INTO job_events (job_id, attempt, kind, worker, detail, at)
        SELECT id, attempt, 'completed', worker, detail, completed_at FROM done
    )"""


#: Take a due pending job for a run: processing, leased to this run, attempt counted; and in
#: the same round trip, record the completions this process still holds (the run before this
#: one, usually). Only an active tenant's job is taken; a suspended tenant's stays pending,
#: held (unpublished, so the sweep sends it again once the tenant is resumed), and a deleted
#: tenant's fails, each with an event saying why. Prepared once per connection (see
#: :func:`prepare`): it runs for every job.
#: Parameters: $1 id, $2 worker, $3 lease owner, $4 lease seconds, $5 default max retries,
#: $6 the completions as a JSON array.
CLAIM = "jobq_claim"
_CLAIMABLE = f"""
           j.id = $1 AND j.status = 'pending'
           AND (j.run_at IS NULL OR j.run_at <= now() + {RUN_AT_SLACK})
           AND NOT EXISTS (SELECT 1 FROM v WHERE v.id = $1)
           AND t.id = j.tenant_id"""
CLAIM_SQL = f"""
    WITH {_completing("$6")}, claimed AS (
        UPDATE job_executions j
           SET status = 'processing', executed_at = now(), completed_at = NULL,
               worker = $2, lease_owner = $3,
               lease_expires_at = now() + make_interval(secs => $4),
               progress = NULL, updated_at = now()
          FROM tenants t
         WHERE {_CLAIMABLE} AND t.status = 'active'
        RETURNING j.id, j.tenant_id::text, j.intent_key, j.intent_params,
                  coalesce(j.retry_count, 0) + 1 AS attempt,
                  coalesce(j.max_retries, $5) AS max_retries,
                  j.checkpoint, coalesce(j.run_at, j.created_at) AS scheduled_for,
                  j.params_dropped
    ), started AS (
        INSERT INTO job_events (job_id, attempt, kind, worker)
        SELECT id, attempt, 'started', $2 FROM claimed
    ), stopped AS (
        UPDATE job_executions j
           SET status = CASE WHEN t.status = 'suspended' THEN 'pending' ELSE 'failed' END,
               completed_at = CASE WHEN t.status = 'suspended' THEN NULL ELSE now() END,
               error_message = CASE WHEN t.status = 'suspended' THEN j.error_message
                                    ELSE {_TENANT_REFUSAL} END,
               published_at = NULL, updated_at = now()
          FROM tenants t
         WHERE NOT EXISTS (SELECT 1 FROM claimed) AND {_CLAIMABLE} AND t.status <> 'active'
        RETURNING j.id, t.status AS tenant_status, coalesce(j.retry_count, 0) AS retries,
                  {_TENANT_REFUSAL} AS reason
    ), stopped_events AS (
        INSERT INTO job_events (job_id, attempt, kind, worker, error, detail)
        SELECT id, retries, CASE WHEN tenant_status = 'suspended' THEN 'held' ELSE 'refused' END,
               $2, reason, jsonb_build_object('tenant_status', tenant_status)
          FROM stopped
    )
    SELECT c.id::text, c.tenant_id, c.intent_key, c.intent_params, c.attempt, c.max_retries,
           c.checkpoint, c.scheduled_for, c.params_dropped,
           ARRAY(SELECT id::text FROM done) AS completed,
           s.tenant_status, s.reason
      FROM (SELECT 1) AS one LEFT JOIN claimed c ON true LEFT JOIN stopped s ON true
"""

#: Statements prepared on every status connection as it opens: name -> (argument types, SQL).
PREPARED = {CLAIM: ("uuid, text, text, float8, int, jsonb", CLAIM_SQL)}


def prepare(dbapi_connection) -> None:
    """Prepare the hot statements on a new connection (parsed and planned once, not per job)."""
    with dbapi_connection.cursor() as cur:
        for name, (types, sql) in PREPARED.items():
            cur.execute(f"PREPARE {name} ({types}) AS {sql}")


#: Whether a run's owner is gone (its run is lost). An owner that holds a liveness lock
#: (app.store.liveness) is dead the moment its lock is free, and alive while it holds it, even
#: with its lease lapsed (a handler blocked in C code stops the renewing thread too) until the
#: lease is ``:wedged`` seconds overdue, longer than any run may last. For other owners the lease decides: their
#: process stopped renewing it, so it is gone. A processing row without a lease (written so
#: from outside, e.g. left over from the original cron worker) was never leased by the engine
#: and is lost once it is a lease period old.
#: Right after a database restart nobody could renew a lease nor hold a lock: wait one lease
#: period first.
_OWNER_GONE = (
    f"CASE WHEN {liveness.has_token('lease_owner')} "
    f"THEN NOT {liveness.owner_alive('lease_owner')} "
    "OR lease_expires_at < now() - make_interval(secs => :wedged) "
    "ELSE lease_expires_at < now() "
    "OR (lease_expires_at IS NULL "
    "AND coalesce(executed_at, updated_at) < now() - make_interval(secs => :lease)) END "
    "AND pg_postmaster_start_time() < now() - make_interval(secs => :lease)"
)

#: What a message for an unclaimable job is up against.
INSPECT = text(
    f"""
    SELECT status, lease_owner, {_OWNER_GONE} AS lease_expired,
           coalesce(run_at > now() + {RUN_AT_SLACK}, false) AS not_due
      FROM job_executions WHERE id = CAST(:id AS uuid)
    """
)


@dataclass(frozen=True)
class Claimed:
    id: str
    tenant_id: str
    intent_key: str
    intent_params: Any
    attempt: int
    max_retries: int
    checkpoint: Any
    scheduled_for: dt.datetime
    #: Refused once with parameters that were not kept, and put back to pending from outside
    #: (a retry gives new ones): it must not run on the intent's defaults.
    params_dropped: bool = False


@dataclass(frozen=True)
class Inspected:
    status: str
    lease_owner: str | None
    lease_expired: bool
    not_due: bool


@dataclass(frozen=True)
class TenantRefusal:
    """A claim that found the job's tenant not active: held (suspended) or failed (deleted)."""

    tenant_status: str
    reason: str

    @property
    def held(self) -> bool:
        return self.tenant_status == "suspended"


def claim(conn, job_id: str, *, worker: str, owner: str, lease: float, default_max_retries: int,
          completing: Sequence[Outcome] = ()
          ) -> tuple[Claimed | None, set[str], TenantRefusal | None]:
    """Claim ``job_id`` on a status connection, recording ``completing`` on the way; returns
    the claim (None when the job is not there to take), the ids that were completed, and why
    the job was held or failed instead when its tenant is not active."""
    rows = json.dumps([o.as_row() for o in completing], ensure_ascii=False, default=str)
    row = conn.exec_driver_sql(
        f"EXECUTE {CLAIM} (%s, %s, %s, %s, %s, %s)",
        (job_id, worker, owner, lease, default_max_retries, rows),
    ).one()
    claimed = Claimed(*row[:9]) if row[0] is not None else None
    refusal = TenantRefusal(row[10], row[11]) if row[10] is not None else None
    return claimed, set(row[9]), refusal


def inspect(conn, job_id: str, *, lease: float, wedged: float) -> Inspected | None:
    """``lease_expired`` says whether the run's owner lost it (see :data:`RELEASE_EXPIRED`)."""
    row = conn.execute(INSPECT, {"id": job_id, "lease": lease, "wedged": wedged}).first()
    return Inspected(*row) if row else None


#: Keep the leases of this process's running jobs fresh (each run has its own owner token).
RENEW_LEASES = text(
    """
    UPDATE job_executions SET lease_expires_at = now() + make_interval(secs => :lease)
     WHERE id = ANY(:ids) AND status = 'processing' AND lease_owner = ANY(:owners)
    """
).bindparams(bindparam("ids", type_=_IDS), bindparam("owners", type_=ARRAY(Text)))


def renew_leases(conn, ids: Sequence[str], *, owners: Sequence[str], lease: float) -> int:
    if not ids:
        return 0
    return conn.execute(RENEW_LEASES, {"ids": list(ids), "owners": list(owners),
                                       "lease": lease}).rowcount


#: Which of a process's runs no longer own their job (cancelled, or taken over after their lease
#: lapsed), with the job's status now: primary-key lookups, and usually no row.
LOST_RUNS = text(
    """
    SELECT v.owner, j.status
      FROM unnest(CAST(:ids AS uuid[]), CAST(:owners AS text[])) AS v(id, owner)
      LEFT JOIN job_executions j ON j.id = v.id
     WHERE j.status IS DISTINCT FROM 'processing' OR j.lease_owner IS DISTINCT FROM v.owner
    """
).bindparams(bindparam("ids", type_=ARRAY(Text)), bindparam("owners", type_=ARRAY(Text)))


def lost_runs(conn, ids: Sequence[str], *, owners: Sequence[str]) -> dict[str, str | None]:
    """Lease owner -> the job's status, for each run that no longer owns its job."""
    if not ids:
        return {}
    rows = conn.execute(LOST_RUNS, {"ids": list(ids), "owners": list(owners)})
    return {r[0]: r[1] for r in rows}


#: Record how far a running job got.
SET_PROGRESS = text(
    """
    UPDATE job_executions SET progress = :progress, updated_at = now()
     WHERE id = CAST(:id AS uuid) AND status = 'processing'
    """
).bindparams(bindparam("progress", type_=_JSON))


def set_progress(conn, job_id: str, progress: dict[str, Any]) -> None:
    conn.execute(SET_PROGRESS, {"id": job_id, "progress": progress})


#: Save a resumable handler's state, only while this process still owns the run.
SAVE_CHECKPOINT = text(
    """
    UPDATE job_executions SET checkpoint = :state, updated_at = now()
     WHERE id = CAST(:id AS uuid) AND status = 'processing' AND lease_owner = :owner
    """
).bindparams(bindparam("state", type_=_JSON))


def save_checkpoint(conn, job_id: str, *, owner: str, state: Any) -> bool:
    return conn.execute(SAVE_CHECKPOINT, {"id": job_id, "owner": owner, "state": state}).rowcount == 1


#: Runs succeeded. Either in the handler's own transaction (one row), so its effects and this
#: land together, or a batch for handlers that wrote nothing themselves (usually it rides along
#: with the process's next claim, see CLAIM). ``finished_at`` is when the handler returned, by
#: the worker's clock, never before the run's start.
COMPLETE = text(f"WITH {_completing(':rows')} SELECT id::text FROM done")


@dataclass(frozen=True)
class Outcome:
    """A successful run, as the runner hands it over."""

    id: str
    owner: str
    worker: str
    attempt: int
    result: Any
    detail: dict[str, Any] | None
    finished_at: dt.datetime

    def as_row(self) -> dict[str, Any]:
        return {"id": self.id, "owner": self.owner, "worker": self.worker,
                "attempt": self.attempt, "result": self.result, "detail": self.detail,
                "finished_at": self.finished_at.isoformat()}


def complete(conn, outcomes: Sequence[Outcome]) -> set[str]:
    """Mark runs completed; returns the ids still owned by their run (the others were
    cancelled or lost to recovery meanwhile, and stay as they are)."""
    if not outcomes:
        return set()
    rows = json.dumps([o.as_row() for o in outcomes], ensure_ascii=False, default=str)
    return {r[0] for r in conn.execute(COMPLETE, {"rows": rows})}


#: A run failed with a transient error and will run again at ``run_at``.
RETRY_LATER = text(
    """
    WITH again AS (
        UPDATE job_executions
           SET status = 'pending', retry_count = coalesce(retry_count, 0) + 1,
               error_message = :error, run_at = now() + make_interval(secs => :delay),
               published_at = CASE WHEN :via_countdown THEN now() END,
               lease_owner = NULL, lease_expires_at = NULL, updated_at = now()
         WHERE id = CAST(:id AS uuid) AND status = 'processing' AND lease_owner = :owner
        RETURNING id, run_at
    ), event AS (
        INSERT INTO job_events (job_id, attempt, kind, worker, error, traceback, detail)
        SELECT id, :attempt, 'retry', :worker, :error, :traceback,
               jsonb_build_object('delay_seconds', CAST(:delay AS float8), 'run_at', run_at)
          FROM again
    )
    SELECT count(*) FROM again
    """
)


def retry_later(conn, job_id: str, *, owner: str, worker: str, attempt: int, error: str,
                traceback: str | None, delay: float, via_countdown: bool) -> bool:
    row = conn.execute(
        RETRY_LATER,
        {"id": job_id, "owner": owner, "worker": worker, "attempt": attempt, "error": error,
         "traceback": traceback, "delay": delay, "via_countdown": via_countdown},
    ).first()
    return bool(row and row[0])


#: A run failed for good.
FAIL = text(
    """
    WITH failed AS (
        UPDATE job_executions
           SET status = 'failed', completed_at = now(), error_message = :error,
               lease_owner = NULL, lease_expires_at = NULL, updated_at = now()
         WHERE id = CAST(:id AS uuid) AND status = 'processing' AND lease_owner = :owner
        RETURNING id
    ), event AS (
        INSERT INTO job_events (job_id, attempt, kind, worker, error, traceback)
        SELECT id, :attempt, 'failed', :worker, :error, :traceback FROM failed
    )
    SELECT count(*) FROM failed
    """
)


def fail(conn, job_id: str, *, owner: str, worker: str, attempt: int, error: str,
         traceback: str | None) -> bool:
    row = conn.execute(
        FAIL,
        {"id": job_id, "owner": owner, "worker": worker, "attempt": attempt, "error": error,
         "traceback": traceback},
    ).first()
    return bool(row and row[0])


#: Runs that ended after their job was cancelled or taken over: a ``stopped`` event in the job's
#: history and nothing else, the row stays as the cancel or the takeover left it. Only a run that
#: no longer owns its job is recorded so. ``detail`` says how long it ran and whether the engine
#: interrupted it (or it finished first and its outcome was discarded).
RECORD_STOPPED = text(
    """
    INSERT INTO job_events (job_id, attempt, kind, worker, detail)
    SELECT j.id, v.attempt, 'stopped', v.worker,
           v.detail || jsonb_build_object(
               'reason', CASE WHEN j.status = 'cancelled' THEN 'cancelled' ELSE 'taken over' END)
      FROM jsonb_to_recordset(CAST(:rows AS jsonb))
           AS v(id uuid, owner text, attempt int, worker text, detail jsonb)
      JOIN job_executions j ON j.id = v.id
     WHERE NOT (j.status = 'processing' AND j.lease_owner IS NOT DISTINCT FROM v.owner)
    RETURNING job_id::text, detail->>'reason'
    """
)


@dataclass(frozen=True)
class Stopped:
    """A run that ended without owning its job any more, as the runner hands it over."""

    id: str
    owner: str
    worker: str
    attempt: int
    ran_ms: float
    interrupted: bool

    def as_row(self) -> dict[str, Any]:
        return {"id": self.id, "owner": self.owner, "worker": self.worker,
                "attempt": self.attempt,
                "detail": {"ran_ms": self.ran_ms, "interrupted": self.interrupted}}


def record_stopped(conn, runs: Sequence[Stopped]) -> dict[str, str]:
    """Record the end of ``runs``; job id -> why it was no longer theirs, for those recorded."""
    if not runs:
        return {}
    rows = json.dumps([r.as_row() for r in runs], ensure_ascii=False)
    return {r[0]: r[1] for r in conn.execute(RECORD_STOPPED, {"rows": rows})}


#: How the run of a job cancelled while it ran ended: its ``stopped`` event after the latest
#: cancel, with the seconds between the two (both by the database's clock).
STOPPED_AFTER_CANCEL = text(
    """
    SELECT extract(epoch FROM s.at - c.at)::float8 AS after, s.worker, s.detail
      FROM (SELECT at, attempt FROM job_events
             WHERE job_id = CAST(:id AS uuid) AND kind = 'cancelled'
             ORDER BY at DESC, id DESC LIMIT 1) c
      JOIN job_events s ON s.job_id = CAST(:id AS uuid) AND s.kind = 'stopped'
                       AND s.attempt = c.attempt AND s.at >= c.at
     ORDER BY s.at, s.id
     LIMIT 1
    """
)


def stopped_after_cancel(conn, job_id: str) -> tuple[float, str | None, dict[str, Any]] | None:
    """``(seconds after the cancel, worker, detail)`` of the cancelled run's end, or None."""
    row = conn.execute(STOPPED_AFTER_CANCEL, {"id": job_id}).first()
    return (row[0], row[1], row[2] or {}) if row else None


# --- lost runs -------------------------------------------------------------------------------

_RELEASE_LOST = """
    WITH lost AS (
        SELECT id, coalesce(retry_count, 0) AS retries,
               coalesce(max_retries, :default_max_retries) AS max_retries,
               worker, lease_owner, lease_expires_at
          FROM job_executions
         WHERE status = 'processing' AND {where}
         ORDER BY lease_expires_at
         LIMIT :batch
           FOR UPDATE SKIP LOCKED
    ), released AS (
        UPDATE job_executions j
           SET status = CASE WHEN lost.retries < lost.max_retries THEN 'pending' ELSE 'failed' END,
               retry_count = CASE WHEN lost.retries < lost.max_retries
                                  THEN lost.retries + 1 ELSE j.retry_count END,
               error_message = :error || ' (' || coalesce(lost.worker, 'unknown worker') || ', '
                               || coalesce(lost.lease_owner, '?') || ')',
               completed_at = CASE WHEN lost.retries < lost.max_retries THEN NULL ELSE now() END,
               run_at = CASE WHEN lost.retries < lost.max_retries THEN now() ELSE j.run_at END,
               published_at = NULL, lease_owner = NULL, lease_expires_at = NULL,
               updated_at = now()
          FROM lost
         WHERE j.id = lost.id
        RETURNING j.id, j.status, lost.retries + 1 AS attempt, lost.worker, j.error_message
    ), events AS (
        INSERT INTO job_events (job_id, attempt, kind, worker, error)
        SELECT id, attempt, 'lost', worker, error_message FROM released
        UNION ALL
        SELECT id, attempt, 'failed', worker, error_message FROM released WHERE status = 'failed'
    )
    SELECT id::text, status, attempt, worker FROM released
"""

#: Runs whose owner is gone (see :data:`_OWNER_GONE`).
RELEASE_EXPIRED = text(_RELEASE_LOST.format(where=f"({_OWNER_GONE})"))
#: One run whose lease holder is known to be dead (its pid is gone from this host).
RELEASE_OWNED = text(
    _RELEASE_LOST.format(where="id = CAST(:id AS uuid) AND lease_owner = :owner")
)

LOST_ERROR = "worker lost: the process running this attempt died or stopped renewing its lease"


@dataclass(frozen=True)
class Released:
    id: str
    status: str  # pending (will run again) or failed
    attempt: int
    worker: str | None


def release_expired(conn, *, batch: int, default_max_retries: int,
                    lease: float, wedged: float) -> list[Released]:
    rows = conn.execute(
        RELEASE_EXPIRED,
        {"batch": batch, "error": LOST_ERROR, "default_max_retries": default_max_retries,
         "lease": lease, "wedged": wedged},
    )
    return [Released(*r) for r in rows]


def release_owned(conn, job_id: str, *, owner: str, default_max_retries: int) -> Released | None:
    row = conn.execute(
        RELEASE_OWNED,
        {"id": job_id, "owner": owner, "batch": 1, "error": LOST_ERROR,
         "default_max_retries": default_max_retries},
    ).first()
    return Released(*row) if row else None


# --- the sweep -------------------------------------------------------------------------------

#: Due pending jobs that no broker holds and no fairness feeder will publish: rows inserted
#: without a queue (plain SQL: the sweep routes them to their intent's queue, where the
#: feeder takes them in their turn), rows published into a Redis that has since lost its data
#: (``:broker_since``, see app.beat.sweep.broker_epoch) or so long ago without starting that
#: the message must be lost, and pending rows of a deleted tenant (refused). With their
#: tenant's status; a suspended tenant's jobs are held (left as they are until it is resumed).
#: Each part is read on its own small index: the backlog the feeder owns is never scanned.
#: (Published rows in order of ``published_at``, on ix_job_executions_published: without the
#: order the planner, which sees most rows of the table published long ago, walks the whole
#: backlog on ix_job_executions_due looking for them; ``greatest`` ignores a NULL
#: ``:broker_since``.) Locked until the sweep commits.
LOCK_DUE = text(
    """
    SELECT j.id::text, j.tenant_id::text, j.intent_key, j.intent_params, j.queue,
           j.published_at IS NOT NULL AS republish,
           coalesce(j.published_at < CAST(:broker_since AS timestamptz), false) AS lost,
           t.status AS tenant_status
      FROM job_executions j
      JOIN tenants t ON t.id = j.tenant_id AND t.status <> 'suspended'
     WHERE j.id IN (
            (SELECT id FROM job_executions
              WHERE status = 'pending' AND queue IS NULL
                AND coalesce(run_at, created_at) <= now()
              ORDER BY coalesce(run_at, created_at) LIMIT :batch)
            UNION ALL
            (SELECT id FROM job_executions
              WHERE status = 'pending' AND published_at IS NOT NULL
                AND published_at < greatest(now() - make_interval(secs => :republish_after),
                                            CAST(:broker_since AS timestamptz))
              ORDER BY published_at LIMIT :batch)
            UNION ALL
            (SELECT d.id FROM tenants dt
               JOIN job_executions d ON d.tenant_id = dt.id AND d.status = 'pending'
              WHERE dt.status = 'deleted' LIMIT :batch))
       AND j.status = 'pending'
       AND coalesce(j.run_at, j.created_at) <= now()
     ORDER BY coalesce(j.run_at, j.created_at)
     LIMIT :batch
       FOR UPDATE OF j SKIP LOCKED
    """
)

#: Give rows inserted without a queue their intent's queue: the update's trigger puts them in
#: the fair queue (migration 0005).
ROUTE = text(
    "UPDATE job_executions SET queue = :queue WHERE id = ANY(:ids) AND queue IS NULL"
).bindparams(bindparam("ids", type_=_IDS))

#: (queue, tenant)s marked idle that have a due unpublished job again (a ``run_at`` or a
#: retry's backoff came due, a tenant was resumed): ready once more, at the queue's clock.
FLAG_DUE = text(
    """
    WITH due AS (
        SELECT f.queue, f.tenant_id FROM fair_queue f
          JOIN tenants t ON t.id = f.tenant_id AND t.status = 'active'
         WHERE NOT f.ready
           AND EXISTS (SELECT 1 FROM job_executions j
                        WHERE j.queue = f.queue AND j.tenant_id = f.tenant_id
                          AND j.status = 'pending' AND j.published_at IS NULL
                          AND coalesce(j.run_at, j.created_at) <= now())
           FOR UPDATE OF f SKIP LOCKED
    ), flagged AS (
        UPDATE fair_queue f
           SET ready = true, readied_at = clock_timestamp(),
               vtime = greatest(f.vtime, coalesce(
                   (SELECT c.vclock FROM fair_clock c WHERE c.queue = f.queue), 0) - 1e-6)
          FROM due WHERE f.queue = due.queue AND f.tenant_id = due.tenant_id
        RETURNING f.queue
    )
    SELECT queue, count(*), pg_notify('jobq_feed', queue) FROM flagged GROUP BY queue
    """
)

#: One look of a queue's feeder, in one round trip: how many of its jobs the broker holds now
#: (published, due, not started: the window; a retry riding a broker countdown is not waiting
#: for a worker, and counting it let a run of retries fill a small window and starve the
#: queue: the soak's throughput fell to a few jobs a second), then up to ``:size`` minus that many of the next jobs
#: in fair order, stamped published (``jobq_feed``), and whether anyone waited (as the look
#: began). Always one row for the counts; the picked jobs, if any, ride on it and after it.
LOOK = text(
    """
    WITH held AS MATERIALIZED (
        SELECT count(*)::int AS n FROM job_executions
         WHERE queue = :queue AND status = 'pending' AND published_at IS NOT NULL
           AND (run_at IS NULL OR run_at <= now())
    ), picked AS MATERIALIZED (
        SELECT * FROM jobq_feed(:queue, greatest(0, :size - (SELECT n FROM held)))
    )
    SELECT (SELECT n FROM held),
           EXISTS (SELECT 1 FROM fair_queue WHERE queue = :queue AND ready),
           p.id::text, p.tenant_id::text, p.intent_key, p.intent_params
      FROM (SELECT 1) AS one LEFT JOIN picked p ON true
    """
)

#: The next jobs of a queue in fair order, stamped published.
FEED = text(
    "SELECT id::text, tenant_id::text, intent_key, intent_params FROM jobq_feed(:queue, :n)")

#: The window a queue's feeder keeps (callers' fast path fills it no further).
SET_WINDOW = text(
    """
    INSERT INTO fair_clock AS c (queue, window_size) VALUES (:queue, :window)
    ON CONFLICT (queue) DO UPDATE SET window_size = excluded.window_size
    """
)


@dataclass(frozen=True)
class Picked:
    id: str
    tenant_id: str
    intent_key: str
    intent_params: Any


@dataclass(frozen=True)
class Look:
    in_flight: int
    waiting: bool
    picked: list[Picked]


def look(conn, queue: str, size: int) -> Look:
    """One look at ``queue`` for a window of ``size`` (see :data:`LOOK`); commit, then publish
    what it picked."""
    rows = conn.execute(LOOK, {"queue": queue, "size": size}).all()
    return Look(rows[0][0], rows[0][1], [Picked(*r[2:]) for r in rows if r[2] is not None])


def feed(conn, queue: str, n: int) -> list[Picked]:
    """Pick and stamp the next ``n`` jobs of ``queue`` (publish them after commit)."""
    return [Picked(*r) for r in conn.execute(FEED, {"queue": queue, "n": n})]


def set_window(conn, queue: str, size: int) -> None:
    conn.execute(SET_WINDOW, {"queue": queue, "window": size})


def route(conn, ids: Sequence[str], queue: str) -> None:
    if ids:
        conn.execute(ROUTE, {"ids": list(ids), "queue": queue})


def flag_due(conn) -> dict[str, int]:
    """Queue -> how many of its idle tenants were ready again."""
    return {r[0]: r[1] for r in conn.execute(FLAG_DUE)}


#: The database's now, and how many pending jobs were handed to the broker before it (a broker
#: that lost its data lost their messages).
PUBLISHED_PENDING = text(
    """
    SELECT now(), count(*) FROM job_executions
     WHERE status = 'pending' AND published_at IS NOT NULL
    """
)

#: Stamp the hand-off to the broker.
MARK_PUBLISHED = text(
    """
    UPDATE job_executions SET published_at = now(), queue = coalesce(queue, :queue)
     WHERE id = ANY(:ids)
    """
).bindparams(bindparam("ids", type_=_IDS))

#: The broker did not take them: let the sweep publish them again.
MARK_UNPUBLISHED = text(
    """
    UPDATE job_executions SET published_at = NULL
     WHERE id = ANY(:ids) AND status = 'pending'
    """
).bindparams(bindparam("ids", type_=_IDS))


@dataclass(frozen=True)
class Due:
    id: str
    tenant_id: str
    intent_key: str
    intent_params: Any
    queue: str | None
    republish: bool
    #: Published into a Redis that has since lost its data.
    lost: bool
    tenant_status: str


def lock_due(conn, *, batch: int, republish_after: float,
             broker_since: str | None = None) -> list[Due]:
    rows = conn.execute(LOCK_DUE, {"batch": batch, "republish_after": republish_after,
                                   "broker_since": broker_since})
    return [Due(*r) for r in rows]


def mark_published(conn, ids: Sequence[str], *, queue: str | None = None) -> None:
    if ids:
        conn.execute(MARK_PUBLISHED, {"ids": list(ids), "queue": queue})


def mark_unpublished(conn, ids: Sequence[str]) -> None:
    if ids:
        conn.execute(MARK_UNPUBLISHED, {"ids": list(ids)})


#: A pending job the engine cannot run (its intent is unknown, its tenant deleted): failed with
#: the reason.
REFUSE_PENDING = text(
    """
    WITH refused AS (
        UPDATE job_executions
           SET status = 'failed', completed_at = now(), error_message = :error,
               updated_at = now()
         WHERE id = CAST(:id AS uuid) AND status = 'pending'
        RETURNING id, coalesce(retry_count, 0) AS retries
    ), event AS (
        INSERT INTO job_events (job_id, attempt, kind, error)
        SELECT id, retries, 'refused', :error FROM refused
    )
    SELECT count(*) FROM refused
    """
)


def refuse_pending(conn, job_id: str, error: str) -> bool:
    row = conn.execute(REFUSE_PENDING, {"id": job_id, "error": error}).first()
    return bool(row and row[0])


#: Every pending (or awaiting approval) job of a tenant being deleted: failed with the reason, naming who deleted it.
REFUSE_TENANT_PENDING = text(
    """
    WITH refused AS (
        UPDATE job_executions
           SET status = 'failed', completed_at = now(), error_message = :error,
               updated_at = now()
         WHERE tenant_id = CAST(:tenant_id AS uuid)
           AND status IN ('pending', 'awaiting_approval')
        RETURNING id, coalesce(retry_count, 0) AS retries
    ), event AS (
        INSERT INTO job_events (job_id, attempt, kind, error, detail)
        SELECT id, retries, 'refused', :error, jsonb_build_object('by', CAST(:by AS text))
          FROM refused
    )
    SELECT count(*) FROM refused
    """
)


def refuse_tenant_pending(conn, tenant_id: str, *, error: str, by: str) -> int:
    """Fail every pending job of ``tenant_id``; how many there were."""
    return conn.execute(REFUSE_TENANT_PENDING,
                        {"tenant_id": tenant_id, "error": error, "by": by}).scalar_one()


def tenant_refusal(tenant_id: str, status: str) -> str:
    """Why a job of a tenant that is not active does not run (as the claim says it, in SQL)."""
    if status == "suspended":
        return f"tenant {tenant_id} is suspended; its jobs wait until it is resumed"
    return f"tenant {tenant_id} is {status}; its jobs are refused"


# --- retention -------------------------------------------------------------------------------

_FINISHED_AND_OLD = """
    {t}.status IN ('completed', 'failed', 'cancelled')
    AND {t}.completed_at < now() - make_interval(
        days => CASE WHEN {t}.status = 'failed' THEN :failed_days ELSE :days END)
"""

#: One batch of finished jobs past their retention age (failed ones are kept longer), deleted
#: with their events by the foreign keys' cascade. A parent goes only when every child is old
#: enough too, since the cascade would take the children with it.
DELETE_EXPIRED = text(
    f"""
    WITH doomed AS (
        SELECT j.id
          FROM job_executions j
         WHERE j.status = ANY(:statuses)
           AND j.completed_at < now() - make_interval(days => :older_than_days)
           AND NOT EXISTS (
                SELECT 1 FROM job_executions c
                 WHERE c.parent_id = j.id
                   AND NOT coalesce({_FINISHED_AND_OLD.format(t="c")}, false))
         ORDER BY j.completed_at
         LIMIT :batch
           FOR UPDATE OF j SKIP LOCKED
    )
    DELETE FROM job_executions j USING doomed WHERE j.id = doomed.id
    """
).bindparams(bindparam("statuses", type_=ARRAY(Text())))


def delete_expired(conn, *, statuses: Sequence[str], older_than_days: int, days: int,
                   failed_days: int, batch: int) -> int:
    """Delete one batch of jobs in ``statuses`` finished more than ``older_than_days`` ago."""
    return conn.execute(
        DELETE_EXPIRED,
        {"statuses": list(statuses), "older_than_days": older_than_days, "days": days,
         "failed_days": failed_days, "batch": batch},
    ).rowcount


# --- operator actions ------------------------------------------------------------------------

#: Cancel a job that has not finished; returns its status before.
CANCEL = text(
    """
    WITH before AS (
        SELECT id, status, coalesce(retry_count, 0) + 1 AS attempt
          FROM job_executions
         WHERE id = CAST(:id AS uuid) AND status IN ('pending', 'processing', 'awaiting_approval')
           FOR UPDATE
    ), cancelled AS (
        UPDATE job_executions j
           SET status = 'cancelled', completed_at = now(), error_message = :reason,
               lease_owner = NULL, lease_expires_at = NULL, updated_at = now()
          FROM before WHERE j.id = before.id
        RETURNING j.id, before.status AS was, before.attempt
    ), event AS (
        INSERT INTO job_events (job_id, attempt, kind, error, detail)
        SELECT id, attempt, 'cancelled', :reason,
               jsonb_build_object('was', was, 'by', CAST(:by AS text))
          FROM cancelled
    )
    SELECT was FROM cancelled
    """
)


def cancel(conn, job_id: str, *, reason: str, by: str) -> str | None:
    """The status the job had, or None when it was not pending, processing or awaiting
    approval."""
    row = conn.execute(CANCEL, {"id": job_id, "reason": reason, "by": by}).first()
    return row[0] if row else None


#: Put a finished job back to pending as a fresh start, keeping its history; with ``:params``,
#: on corrected parameters (the event keeps the old and the new) and ``:max_retries``. It is due
#: from now (``run_at``): its wait for a worker starts here, not when it was first asked for. A job
#: that was asked for with an approval and never got one goes back to awaiting it (for
#: ``:approval_seconds``): a cancel and a retry must not run it unapproved. A job whose
#: parameters were not kept (``params_dropped``) goes back only with new ones: it must never
#: run on defaults its caller did not send.
REQUEUE = text(
    """
    WITH before AS (
        SELECT j.id, j.status, j.intent_params,
               EXISTS (SELECT 1 FROM job_events e
                        WHERE e.job_id = j.id AND e.kind = 'created'
                          AND e.detail ? 'awaiting_approval')
               AND NOT EXISTS (SELECT 1 FROM job_events e
                                WHERE e.job_id = j.id AND e.kind = 'approved') AS unapproved
          FROM job_executions j
         WHERE j.id = CAST(:id AS uuid) AND j.status IN ('failed', 'cancelled')
           AND (:replace OR NOT j.params_dropped)
           FOR UPDATE
    ), again AS (
        UPDATE job_executions j
           SET status = CASE WHEN before.unapproved THEN 'awaiting_approval' ELSE 'pending' END,
               approval_expires_at = CASE WHEN before.unapproved
                   THEN now() + make_interval(secs => :approval_seconds) END,
               retry_count = 0, error_message = NULL,
               completed_at = NULL, executed_at = NULL, result = NULL, progress = NULL,
               run_at = now(), published_at = NULL, updated_at = now(),
               intent_params = CASE WHEN :replace THEN :params ELSE j.intent_params END,
               params_dropped = j.params_dropped AND NOT :replace,
               max_retries = coalesce(:max_retries, j.max_retries)
          FROM before WHERE j.id = before.id
        RETURNING j.id, before.status AS was, before.intent_params AS old_params, j.status
    ), event AS (
        INSERT INTO job_events (job_id, attempt, kind, detail)
        SELECT id, 0, 'requeued',
               jsonb_build_object('was', was, 'by', CAST(:by AS text))
               || CASE WHEN status = 'awaiting_approval'
                       THEN '{"awaiting_approval": true}'::jsonb ELSE '{}'::jsonb END
               || CASE WHEN :replace
                       THEN jsonb_build_object('params', jsonb_build_object(
                                'old', old_params, 'new', CAST(:params AS jsonb)))
                       ELSE '{}'::jsonb END
          FROM again
    )
    SELECT was, status FROM again
    """
).bindparams(bindparam("params", type_=_JSON))


def requeue(conn, job_id: str, *, by: str, params: Any = None, replace_params: bool = False,
            max_retries: int | None = None, approval_seconds: float = 259200.0
            ) -> tuple[str, str] | None:
    """``(the status it had, the status it has now)``: pending, or awaiting_approval for a job
    never approved. None when it was not failed or cancelled, or when its parameters were not
    kept and no new ones came (``replace_params``)."""
    row = conn.execute(REQUEUE, {"id": job_id, "by": by, "params": params,
                                 "replace": replace_params, "max_retries": max_retries,
                                 "approval_seconds": approval_seconds}).first()
    return (row[0], row[1]) if row else None


# --- approvals -------------------------------------------------------------------------------

#: A job awaiting approval becomes pending, approved by ``:by``, and due no earlier than now
#: (its wait for a worker starts at the approval, not while a person decided); stamped as handed
#: to the broker when it is due within ``:eta_max`` seconds (the caller publishes it after
#: commit; a later one waits for the sweep).
APPROVE = text(
    """
    WITH approved AS (
        UPDATE job_executions j
           SET status = 'pending', approval_expires_at = NULL, updated_at = now(),
               run_at = greatest(j.run_at, now()),
               published_at = CASE WHEN j.run_at IS NULL
                                     OR j.run_at <= now() + make_interval(secs => :eta_max)
                                   THEN now() END
         WHERE j.id = CAST(:id AS uuid) AND j.status = 'awaiting_approval'
        RETURNING j.id, j.tenant_id::text AS tenant_id, j.intent_key, j.intent_params, j.queue,
                  j.published_at IS NOT NULL AS publish,
                  greatest(extract(epoch FROM j.run_at - now()), 0) AS countdown
    ), event AS (
        INSERT INTO job_events (job_id, attempt, kind, detail)
        SELECT id, 0, 'approved',
               jsonb_strip_nulls(jsonb_build_object('by', CAST(:by AS text),
                                                    'note', CAST(:note AS text)))
          FROM approved
    )
    SELECT id::text, tenant_id, intent_key, intent_params, queue, publish,
           CAST(countdown AS float8) FROM approved
    """
)


@dataclass(frozen=True)
class Approved:
    id: str
    tenant_id: str
    intent_key: str
    intent_params: Any
    queue: str | None
    #: Stamped as handed to the broker: the caller publishes it after commit.
    publish: bool
    countdown: float | None


def approve(conn, job_id: str, *, by: str, note: str | None = None,
            eta_max: float = 5.0) -> Approved | None:
    """Approve a job awaiting approval; None when it was not awaiting one."""
    row = conn.execute(APPROVE, {"id": job_id, "by": by, "note": note,
                                 "eta_max": eta_max}).first()
    return Approved(*row) if row else None


#: A job awaiting approval is rejected: cancelled, with who rejected it and why.
REJECT = text(
    """
    WITH rejected AS (
        UPDATE job_executions j
           SET status = 'cancelled', completed_at = now(), error_message = :reason,
               approval_expires_at = NULL, updated_at = now()
         WHERE j.id = CAST(:id AS uuid) AND j.status = 'awaiting_approval'
        RETURNING j.id
    ), event AS (
        INSERT INTO job_events (job_id, attempt, kind, error, detail)
        SELECT id, 0, 'rejected', :reason, jsonb_build_object('by', CAST(:by AS text))
          FROM rejected
    )
    SELECT count(*) FROM rejected
    """
)


def reject(conn, job_id: str, *, by: str, reason: str) -> bool:
    """Reject a job awaiting approval; False when it was not awaiting one."""
    return bool(conn.execute(REJECT, {"id": job_id, "by": by, "reason": reason}).scalar_one())


#: Jobs whose approval did not come in time: cancelled as expired, a batch at a time.
EXPIRE_APPROVALS = text(
    """
    WITH doomed AS (
        SELECT id FROM job_executions
         WHERE status = 'awaiting_approval' AND approval_expires_at <= now()
         ORDER BY approval_expires_at
         LIMIT :batch
           FOR UPDATE SKIP LOCKED
    ), expired AS (
        UPDATE job_executions j
           SET status = 'cancelled', completed_at = now(), updated_at = now(),
               error_message = 'approval expired: nobody approved it by '
                               || to_char(j.approval_expires_at AT TIME ZONE 'UTC',
                                          'YYYY-MM-DD HH24:MI:SS') || ' UTC'
          FROM doomed WHERE j.id = doomed.id
        RETURNING j.id, j.error_message
    ), event AS (
        INSERT INTO job_events (job_id, attempt, kind, error, detail)
        SELECT id, 0, 'expired', error_message, jsonb_build_object('by', 'jobq:expiry')
          FROM expired
    )
    SELECT id::text FROM expired
    """
)


def expire_approvals(conn, *, batch: int) -> list[str]:
    """Cancel up to ``batch`` jobs whose approval expired; their ids."""
    return [r[0] for r in conn.execute(EXPIRE_APPROVALS, {"batch": batch})]


def new_id() -> str:
    return str(uuid.uuid4())
