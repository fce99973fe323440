"""Beat's caretaking as tasks on the ``maintenance`` queue: the sweep, lost-run recovery, the
schedules, retention, expired approvals and the statistics' hourly rollup. They send no task events, so Flower shows the academies' jobs only;
each notes its runs for ``jobq stats`` (:mod:`app.beat.caretaking`)."""

from __future__ import annotations

from app.beat import approvals, recovery, retention, rollup, schedules, sweep
from app.beat.caretaking import caretaking
from app.broker.celery_app import celery_app

# Caretaking tasks send no task events (``send_events=False``): Flower is for the academies'
# jobs, and beat's ticks (several a second) would push them off its first page.
_CARETAKING = {"queue": "maintenance", "ignore_result": True, "acks_late": False,
               "send_events": False}


@celery_app.task(name="jobq.sweep_due_jobs", **_CARETAKING)
@caretaking
def sweep_due_jobs() -> int:
    """Publish due pending jobs that no broker holds; safe to run in many places at once."""
    return sweep.sweep()


@celery_app.task(name="jobq.recover_lost_runs", **_CARETAKING)
@caretaking
def recover_lost_runs() -> int:
    """Runs whose lease lapsed go back to pending (the sweep sends them) or fail."""
    return len(recovery.recover_once())


@celery_app.task(name="jobq.expire_approvals", **_CARETAKING)
@caretaking
def expire_approvals() -> int:
    """Jobs whose approval did not come in time are cancelled as expired."""
    return len(approvals.expire_once())


@celery_app.task(name="jobq.fire_schedules", **_CARETAKING)
@caretaking
def fire_schedules() -> int:
    """Turn every due schedule slot into its jobs; reads the table afresh on each tick."""
    return sum(outcome.jobs for outcome in schedules.fire_due())


@celery_app.task(name="jobq.apply_retention", **_CARETAKING)
@caretaking
def apply_retention() -> int:
    """Delete finished jobs (and their events) older than the retention age, in batches."""
    return retention.delete_expired().jobs


@celery_app.task(name="jobq.roll_up_stats", **_CARETAKING)
@caretaking
def roll_up_stats() -> int:
    """Roll the hours of finished jobs old enough (and those changed since) up for the
    statistics (app.store.rollup)."""
    return rollup.roll_up().hours
