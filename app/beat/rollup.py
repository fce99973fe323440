"""Beat's statistics caretaker: claims the hours of finished jobs old enough to roll up and rolls
them (and those changed since) into ``job_stats_hourly``, one hour a transaction, with the spans
of their day; then makes the spans of recent days rolled without them; within a time budget.
The first run on a long history goes on over the next runs (app.store.rollup)."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from app.store import db, rollup

log = logging.getLogger("jobq.rollup")

#: One run stops after this long; the next goes on (the sweep shares the maintenance process).
TIME_BUDGET_SECONDS = 20.0
#: Hours looked up at a time.
BATCH = 50


@dataclass(frozen=True)
class RollupReport:
    hours: int
    jobs: int
    #: False when the budget ran out with hours left (or other transactions held them back).
    done: bool


def roll_up(*, budget: float = TIME_BUDGET_SECONDS) -> RollupReport:
    """Claim what is old enough, then roll due hours, oldest first, until none or the budget."""
    deadline = time.monotonic() + budget
    with db.engine().begin() as conn:
        rollup.claim(conn)
    hours = jobs = 0
    while True:
        with db.engine().begin() as conn:
            due = rollup.due(conn, limit=BATCH)
        for hour in due:
            with db.engine().begin() as conn:
                got = rollup.roll_hour(conn, hour)
            if got is not None:
                hours, jobs = hours + 1, jobs + got
            if time.monotonic() > deadline:
                log.info("rolled up %d hour(s) of %d finished job(s); more are due", hours, jobs)
                return RollupReport(hours, jobs, done=False)
        if len(due) < BATCH:
            break
    # Recent hours and days rolled before their parts and spans were kept (an upgrade to
    # 0023): newest first (a window's start is a day back).
    tried: set = set()
    while True:
        with db.engine().begin() as conn:
            again = [h for h in rollup.parts_due(conn, limit=BATCH) if h not in tried]
        tried.update(again)
        for hour in again:
            with db.engine().begin() as conn:
                rollup.roll_hour(conn, hour, again=True)
            if time.monotonic() > deadline:
                log.info("rolled up %d hour(s) of %d finished job(s); parts of more hours are "
                         "due", hours, jobs)
                return RollupReport(hours, jobs, done=False)
        if len(again) < BATCH:
            break
    while True:
        with db.engine().begin() as conn:
            days = rollup.spans_due(conn, limit=BATCH)
        for day in days:
            with db.engine().begin() as conn:
                rollup.make_spans(conn, day)
            if time.monotonic() > deadline:
                log.info("rolled up %d hour(s) of %d finished job(s); spans of more days are "
                         "due", hours, jobs)
                return RollupReport(hours, jobs, done=False)
        if len(days) < BATCH:
            break
    with db.engine().begin() as conn:
        rollup.forget_old(conn)
    if hours:
        log.info("rolled up %d hour(s) of %d finished job(s)", hours, jobs)
    return RollupReport(hours, jobs, done=True)
