"""Dates and periods in the academy's time zone, derived from when a job was meant to run.

Handlers take "today" and "this month" from ``ctx.scheduled_for``, not from the clock: a
settlement fired for 1 March and run late on 2 March still bills March.
"""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

from app.handler_api import JobContext, PermanentError, settings


def zone() -> ZoneInfo:
    return ZoneInfo(settings.timezone)


def now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def job_time(ctx: JobContext) -> dt.datetime:
    """When the job was meant to run (now, for a job that does not say)."""
    return ctx.scheduled_for or now()


def local_date(moment: dt.datetime) -> dt.date:
    return moment.astimezone(zone()).date()


def job_date(ctx: JobContext) -> dt.date:
    """The academy's calendar day the job was meant for."""
    return local_date(job_time(ctx))


def month_start(day: dt.date) -> dt.date:
    return day.replace(day=1)


def next_month(month: dt.date) -> dt.date:
    return (month.replace(day=28) + dt.timedelta(days=4)).replace(day=1)


def parse_month(value: str) -> dt.date:
    """``"2026-11"`` -> 2026-11-01."""
    try:
        return dt.datetime.strptime(value, "%Y-%m").date()
    except ValueError:
        raise PermanentError(f"month {value!r} is not YYYY-MM") from None


def at_local(day: dt.date, time: dt.time) -> dt.datetime:
    """The moment ``day`` at ``time`` on the academy's wall clock."""
    return dt.datetime.combine(day, time, tzinfo=zone())


def day_bounds(day: dt.date) -> tuple[dt.datetime, dt.datetime]:
    """The academy's calendar day as [start, end) moments."""
    start = at_local(day, dt.time())
    return start, at_local(day + dt.timedelta(days=1), dt.time())
