"""Finishing a run: completed (alone or in a batch riding on the next claim), retried later,
failed for good, or recorded as stopped when its job was cancelled or taken over meanwhile."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import text


def completing_sql(rows: str) -> str:
    """CTEs ``done`` (runs marked completed) and ``done_events`` for the outcomes in ``rows``."""
    return f"""
    v AS MATERIALIZED (
        -- Each run's row by its id. ``running`` is the status the row must be in, as a value
        -- the planner cannot see, and the row count is given: with a constant
        -- ``status = 'processing'`` it read every entry of the partial index of running jobs
        -- instead, and while a transaction holds the xmin horizon that index keeps one for
        -- every job that ran since (2,299 buffers a completion after ten minutes at 50 jobs/s,
        -- ``python -m bench pressure``).
        SELECT v.*, 'processing'::text AS running
          FROM jsonb_to_recordset(CAST({rows} AS jsonb)) AS v(
            id uuid, owner text, worker text, attempt int, result jsonb, detail jsonb,
            finished_at timestamptz)
         LIMIT jsonb_array_length(CAST({rows} AS jsonb))
    ), done AS (
        UPDATE job_executions j
           SET status = 'completed', completed_at = greatest(v.finished_at, j.executed_at),
               result = v.result, error_message = NULL,
               lease_owner = NULL, lease_expires_at = NULL,
               progress = CASE WHEN j.progress IS NULL THEN NULL
                               ELSE j.progress || '{{"percent": 100}}'::jsonb END,
               updated_at = statement_timestamp()
          FROM v
         WHERE j.id = v.id AND j.status = v.running AND j.lease_owner = v.owner
        RETURNING j.id, v.attempt, v.worker, v.detail, j.completed_at
    ), done_events AS (
        INSERT INTO job_events (job_id, attempt, kind, worker, detail, at)
        SELECT id, attempt, 'completed', worker, detail, completed_at FROM done
    )"""


#: Runs succeeded. Either in the handler's own transaction (one row), so its effects and this
#: land together, or a batch for handlers that wrote nothing themselves (usually it rides along
#: with the process's next claim, see ``claiming.CLAIM``). ``finished_at`` is when the handler
#: returned, by the worker's clock, never before the run's start.
COMPLETE = text(f"WITH {completing_sql(':rows')} SELECT id::text FROM done")


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
                traceback: str | None, delay: float, via_countdown: bool,
                waiting: bool = False) -> bool:
    """Pending again at ``now() + delay``: a retry spent, or with ``waiting`` a wait (none)."""
    if waiting:
        return wait_later(conn, job_id, owner=owner, worker=worker, attempt=attempt,
                          error=error, delay=delay, via_countdown=via_countdown)
    row = conn.execute(
        RETRY_LATER,
        {"id": job_id, "owner": owner, "worker": worker, "attempt": attempt, "error": error,
         "traceback": traceback, "delay": delay, "via_countdown": via_countdown},
    ).first()
    return bool(row and row[0])


#: A run waits for something outside the job (app.core.errors.WaitingError) and runs again at
#: ``run_at``: pending again without a retry spent. The reason is in the history once per
#: attempt and reason (a broadcast's parent looking at its chunks every second writes one).
WAIT_LATER = text(
    """
    WITH again AS (
        UPDATE job_executions
           SET status = 'pending', error_message = :error,
               run_at = now() + make_interval(secs => :delay),
               published_at = CASE WHEN :via_countdown THEN now() END,
               lease_owner = NULL, lease_expires_at = NULL, updated_at = now()
         WHERE id = CAST(:id AS uuid) AND status = 'processing' AND lease_owner = :owner
        RETURNING id, run_at
    ), event AS (
        INSERT INTO job_events (job_id, attempt, kind, worker, error, detail)
        SELECT id, :attempt, 'waiting', :worker, :error,
               jsonb_build_object('delay_seconds', CAST(:delay AS float8), 'run_at', run_at)
          FROM again
         WHERE NOT EXISTS (SELECT 1 FROM job_events e
                            WHERE e.job_id = again.id AND e.attempt = :attempt
                              AND e.kind = 'waiting' AND e.error = :error)
    )
    SELECT count(*) FROM again
    """
)


def wait_later(conn, job_id: str, *, owner: str, worker: str, attempt: int, error: str,
               delay: float, via_countdown: bool) -> bool:
    row = conn.execute(
        WAIT_LATER,
        {"id": job_id, "owner": owner, "worker": worker, "attempt": attempt, "error": error,
         "delay": delay, "via_countdown": via_countdown},
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
