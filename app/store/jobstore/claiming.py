"""Claiming a job for a run: the hot statement every run starts with (prepared once per
connection), what an unclaimable job is up against, and why a tenant that is not active holds
or refuses its jobs."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import text

from app.store.jobstore.finishing import Outcome, completing_sql
from app.store.jobstore.lost import OWNER_GONE

# A run's claim tolerates this much clock skew between a Celery countdown and the database.
RUN_AT_SLACK = "interval '2 seconds'"

#: Why a job of a tenant that is not active does not run: "tenant … is suspended; its jobs
#: wait until it is resumed" or "tenant … is deleted; its jobs are refused" (SQL, over t).
_TENANT_REFUSAL = (
    "'tenant ' || t.id || ' is ' || t.status || CASE WHEN t.status = 'suspended' "
    "THEN '; its jobs wait until it is resumed' ELSE '; its jobs are refused' END"
)

#: Take a due pending job for a run: processing, leased to this run, attempt counted; and in
#: the same round trip, record the completions this process still holds (the run before this
#: one, usually). Only an active tenant's job is taken; a suspended tenant's stays pending,
#: held (unpublished, so the sweep sends it again once the tenant is resumed), and a deleted
#: tenant's fails, each with an event saying why. Prepared on a connection the first time it
#: claims (see :func:`claim`): it runs for every job.
#: Parameters: $1 id, $2 worker, $3 lease owner, $4 lease seconds, $5 default max retries,
#: $6 the completions as a JSON array.
CLAIM = "jobq_claim"
_CLAIMABLE = f"""
           j.id = $1 AND j.status = 'pending'
           AND (j.run_at IS NULL OR j.run_at <= now() + {RUN_AT_SLACK})
           AND NOT EXISTS (SELECT 1 FROM v WHERE v.id = $1)
           AND t.id = j.tenant_id"""
CLAIM_SQL = f"""
    WITH {completing_sql("$6")}, claimed AS (
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
                  j.params_dropped,
                  t.max_running IS NOT NULL OR EXISTS (
                      SELECT 1 FROM tenant_queue_limits l WHERE l.tenant_id = t.id
                         AND l.queue = j.queue AND l.max_running IS NOT NULL) AS capped,
                  j.traceparent, greatest(j.run_at, j.created_at) AS due_at,
                  j.executed_at AS started_at, t.name AS tenant_name
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
           c.checkpoint, c.scheduled_for, c.params_dropped, c.capped,
           ARRAY(SELECT id::text FROM done) AS completed,
           s.tenant_status, s.reason, c.traceparent, c.due_at, c.started_at, c.tenant_name
      FROM (SELECT 1) AS one LEFT JOIN claimed c ON true LEFT JOIN stopped s ON true
"""

#: The claim as a prepared statement: parsed and planned once per connection, not per job.
PREPARE_CLAIM = f"PREPARE {CLAIM} (uuid, text, text, float8, int, jsonb) AS {CLAIM_SQL}"


#: What a message for an unclaimable job is up against.
INSPECT = text(
    f"""
    SELECT status, lease_owner, {OWNER_GONE} AS lease_expired,
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
    #: Its tenant has a cap (on its queue or overall): the run hands the next job on as it ends.
    capped: bool = False
    #: What the run's spans need (app.run.spans), read with the row at no cost: the trace the
    #: job was asked for in, when it became due to run (created, or its run_at: a schedule, a
    #: retry's backoff, a requeue), when this claim took it (both by the database's clock), and
    #: its academy's name.
    traceparent: str | None = None
    due_at: dt.datetime | None = None
    started_at: dt.datetime | None = None
    tenant_name: str | None = None


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


def prepare_claim(conn) -> None:
    """Prepare the claim on ``conn`` (a status connection) unless it is already."""
    # The pool entry's info lives as long as its database connection (cleared when the pool
    # connects anew, e.g. after a database restart), and so does a prepared statement.
    prepared = conn.connection.info
    if CLAIM not in prepared:
        conn.exec_driver_sql(PREPARE_CLAIM, execution_options={"no_parameters": True})
        prepared[CLAIM] = True


def claim(conn, job_id: str, *, worker: str, owner: str, lease: float, default_max_retries: int,
          completing: Sequence[Outcome] = ()
          ) -> tuple[Claimed | None, set[str], TenantRefusal | None]:
    """Claim ``job_id`` on a status connection, recording ``completing`` on the way; returns
    the claim (None when the job is not there to take), the ids that were completed, and why
    the job was held or failed instead when its tenant is not active."""
    prepare_claim(conn)
    rows = json.dumps([o.as_row() for o in completing], ensure_ascii=False, default=str)
    row = conn.exec_driver_sql(
        f"EXECUTE {CLAIM} (%s, %s, %s, %s, %s, %s)",
        (job_id, worker, owner, lease, default_max_retries, rows),
    ).one()
    claimed = Claimed(*row[:10], *row[13:17]) if row[0] is not None else None
    refusal = TenantRefusal(row[11], row[12]) if row[11] is not None else None
    return claimed, set(row[10]), refusal


def inspect(conn, job_id: str, *, lease: float, wedged: float) -> Inspected | None:
    """``lease_expired`` says whether the run's owner lost it (see
    :data:`app.store.jobstore.lost.RELEASE_EXPIRED`)."""
    row = conn.execute(INSPECT, {"id": job_id, "lease": lease, "wedged": wedged}).first()
    return Inspected(*row) if row else None


def tenant_refusal(tenant_id: str, status: str) -> str:
    """Why a job of a tenant that is not active does not run (as the claim says it, in SQL)."""
    if status == "suspended":
        return f"tenant {tenant_id} is suspended; its jobs wait until it is resumed"
    return f"tenant {tenant_id} is {status}; its jobs are refused"
