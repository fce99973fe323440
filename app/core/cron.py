"""Cron slots as pure functions of a schedule's expression, its time zone and the clock: which
slot is due, which were missed, when the next comes, and the key that fires a slot once."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

# croniter is imported where a slot is worked out, not here: its import runs `file -b` on the
# interpreter (a subprocess, to learn whether it is 32-bit), which every worker's start paid
# before its first job although only beat and the schedule commands walk cron slots.

DEFAULT_TIMEZONE = "Asia/Seoul"
#: Missed slots recorded as skipped per firing, at most: a per-second test cron after a day of
#: beat downtime would otherwise write 86,400 rows. Older ones are only counted in the log.
MAX_SKIPPED_RECORDED = 100


class ScheduleError(ValueError):
    """A schedule's definition is not valid; the message says which part and why."""


def zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ScheduleError(f"unknown timezone {name!r} (e.g. Asia/Seoul, UTC)") from None


def validate_cron(cron: str) -> str:
    """The expression, stripped; :class:`ScheduleError` if it is not one croniter can fire.

    Five fields (minute hour day month weekday) or six, the sixth being seconds.
    """
    from croniter import CroniterError, croniter

    cron = " ".join(cron.split())
    try:
        walk = croniter(cron, dt.datetime.now(dt.UTC))
    except CroniterError as exc:
        raise ScheduleError(
            f"invalid cron expression {cron!r} ({exc}): use 5 fields 'minute hour day month "
            "weekday' (e.g. '0 2 1 * *'), or 6 with seconds last"
        ) from None
    try:  # valid syntax can still name a date that never comes, e.g. '0 0 30 2 *'
        walk.get_next(dt.datetime)
    except CroniterError as exc:
        raise ScheduleError(f"cron expression {cron!r} never fires: {exc}") from None
    return cron


def next_slot(cron: str, timezone: str, after: dt.datetime) -> dt.datetime:
    """The first slot strictly after ``after``, in UTC."""
    from croniter import croniter

    return croniter(cron, after.astimezone(zone(timezone))).get_next(dt.datetime).astimezone(dt.UTC)


@dataclass(frozen=True)
class DueSlots:
    """What a schedule owes at a moment: the one slot to fire, and the older ones it skips."""

    latest: dt.datetime | None
    #: Missed slots older than ``latest``, newest first, at most ``MAX_SKIPPED_RECORDED``.
    skipped: tuple[dt.datetime, ...] = ()
    #: More missed slots lie before the recorded ones.
    more_skipped: bool = False


def due_slots(cron: str, timezone: str, *, done_until: dt.datetime, now: dt.datetime,
              max_skipped: int = MAX_SKIPPED_RECORDED) -> DueSlots:
    """Slots in ``(done_until, now]``: the latest fires, older ones (beat was down) are skipped.

    Cron is evaluated in ``timezone`` (a Seoul 02:00 is 17:00 UTC); the slots come back in UTC.
    Walking back from ``now`` keeps the work bounded however long beat was away.
    """
    from croniter import croniter

    tz = zone(timezone)
    # get_prev is strictly before its start; a microsecond later makes a slot at `now` count.
    latest = croniter(cron, now.astimezone(tz) + dt.timedelta(microseconds=1)).get_prev(dt.datetime)
    if latest <= done_until:
        return DueSlots(None)
    walk = croniter(cron, latest)
    skipped: list[dt.datetime] = []
    more = False
    while True:
        earlier = walk.get_prev(dt.datetime)
        if earlier <= done_until:
            break
        if len(skipped) == max_skipped:
            more = True
            break
        skipped.append(earlier.astimezone(dt.UTC))
    return DueSlots(latest.astimezone(dt.UTC), tuple(skipped), more)


def idempotency_key(schedule_id: str, slot: dt.datetime) -> str:
    """The key that makes a slot's job for a tenant exist once."""
    return f"schedule:{schedule_id}:{slot.astimezone(dt.UTC).strftime('%Y-%m-%dT%H:%M:%SZ')}"
