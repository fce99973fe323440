"""While a job runs: its run's lease kept fresh, the runs of a process that no longer own their
job, the progress a handler reports and the checkpoint it saves."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Text, bindparam, text
from sqlalchemy.dialects.postgresql import ARRAY

from app.store.jobstore.binds import IDS, JSON

#: Keep the leases of this process's running jobs fresh (each run has its own owner token).
RENEW_LEASES = text(
    """
    UPDATE job_executions SET lease_expires_at = now() + make_interval(secs => :lease)
     WHERE id = ANY(:ids) AND status = 'processing' AND lease_owner = ANY(:owners)
    """
).bindparams(bindparam("ids", type_=IDS), bindparam("owners", type_=ARRAY(Text)))


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
).bindparams(bindparam("progress", type_=JSON))


def set_progress(conn, job_id: str, progress: dict[str, Any]) -> None:
    conn.execute(SET_PROGRESS, {"id": job_id, "progress": progress})


#: A run's wait for a shared outside resource (a channel's send rate): one ``throttled`` event
#: with how long it waited and why (the provider's rate, the academy's share or its own cap).
RECORD_WAIT = text(
    """
    INSERT INTO job_events (job_id, attempt, kind, worker, detail)
    SELECT id, :attempt, 'throttled', :worker, :detail FROM job_executions
     WHERE id = CAST(:id AS uuid) AND status = 'processing'
    """
).bindparams(bindparam("detail", type_=JSON))


def record_wait(conn, job_id: str, *, attempt: int, worker: str, detail: dict[str, Any]) -> None:
    conn.execute(RECORD_WAIT, {"id": job_id, "attempt": attempt, "worker": worker,
                               "detail": detail})


#: Save a resumable handler's state, only while this process still owns the run.
SAVE_CHECKPOINT = text(
    """
    UPDATE job_executions SET checkpoint = :state, updated_at = now()
     WHERE id = CAST(:id AS uuid) AND status = 'processing' AND lease_owner = :owner
    """
).bindparams(bindparam("state", type_=JSON))


def save_checkpoint(conn, job_id: str, *, owner: str, state: Any) -> bool:
    return conn.execute(SAVE_CHECKPOINT, {"id": job_id, "owner": owner, "state": state}).rowcount == 1
