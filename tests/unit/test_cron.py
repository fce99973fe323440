"""Cron slots (app.core.cron): which slot is due, which were missed, which expressions are
refused, all in the schedule's own time zone."""

from __future__ import annotations

import datetime as dt
import re

import pytest

from app.core import cron

UTC = dt.UTC
SEOUL = cron.zone("Asia/Seoul")


def test_monthly_settlement_slot_is_0200_seoul_on_the_first():
    due = cron.due_slots("0 2 1 * *", "Asia/Seoul",
                              done_until=dt.datetime(2026, 11, 20, tzinfo=UTC),
                              now=dt.datetime(2026, 12, 1, 3, 0, tzinfo=SEOUL))
    assert due.latest == dt.datetime(2026, 11, 30, 17, 0, tzinfo=UTC)  # 12-01 02:00 KST
    assert due.skipped == ()


def test_a_slot_exactly_at_now_is_due_and_one_at_the_watermark_is_done():
    slot = dt.datetime(2026, 11, 30, 7, 0, tzinfo=SEOUL)  # a Monday 07:00
    assert cron.due_slots("0 7 * * 1", "Asia/Seoul", done_until=slot - dt.timedelta(days=1),
                               now=slot).latest == slot
    assert cron.due_slots("0 7 * * 1", "Asia/Seoul", done_until=slot,
                               now=slot + dt.timedelta(days=6)).latest is None


def test_a_long_outage_records_a_bounded_number_of_skipped_slots():
    start = dt.datetime(2026, 1, 1, tzinfo=UTC)
    due = cron.due_slots("* * * * * *", "UTC", done_until=start,
                              now=start + dt.timedelta(days=1), max_skipped=50)
    assert due.latest == start + dt.timedelta(days=1)
    assert len(due.skipped) == 50 and due.more_skipped
    assert due.skipped[0] == due.latest - dt.timedelta(seconds=1)  # newest first


@pytest.mark.parametrize("expression, message", [
    ("61 * * * *", "invalid cron expression '61 * * * *'"),
    ("every day", "invalid cron expression 'every day'"),
    ("0 0 30 2 *", "cron expression '0 0 30 2 *' never fires"),
])
def test_invalid_cron_is_refused_with_its_reason(expression, message):
    with pytest.raises(cron.ScheduleError, match=re.escape(message)):
        cron.validate_cron(expression)
