"""What a run leaves behind (app.core.results): an error as one bounded line without secrets, a
result the table can store, a progress report as a short line."""

from __future__ import annotations

import datetime as dt
import json
import math

from app.core.results import MAX_ERROR, bounded_result, describe, progress_summary
from app.core.settings import settings


def test_an_error_is_its_type_and_message_without_passwords_and_bounded():
    assert describe(ValueError("bad month")) == "ValueError: bad month"
    assert describe(KeyError()) == "KeyError"
    shown = describe(RuntimeError("cannot reach postgresql://jobq:s3cret@db/jobq"))
    assert "s3cret" not in shown and "postgresql://jobq:***@db/jobq" in shown
    long = describe(RuntimeError("x" * 10_000))
    assert len(long) == MAX_ERROR and long.endswith("…")


def test_a_result_becomes_json_the_table_can_store():
    value = bounded_result({"at": dt.datetime(2026, 11, 30, 9, 0), "nul": "a\x00b",
                            "surrogate": "x\ud800y", "nan": math.nan, "nested": [{"n": 1}]})
    assert value == {"at": "2026-11-30 09:00:00", "nul": "a\ufffdb", "surrogate": "x\ufffdy",
                     "nan": None, "nested": [{"n": 1}]}
    json.dumps(value, allow_nan=False)  # storable in jsonb: no NaN, no NUL
    assert bounded_result(None) is None


def test_a_result_too_large_is_kept_as_a_preview():
    big = {"rows": ["가" * 100] * 10_000}
    kept = bounded_result(big)
    assert kept["truncated"] is True and kept["bytes"] > settings.max_result_bytes
    assert len(kept["preview"]) == 1000 and kept["preview"].startswith('{"rows": ["가')


def test_progress_reads_as_one_short_line():
    assert progress_summary({"done": 2, "total": 5, "percent": 40.0, "message": "sending"}) \
        == "40% (2/5) sending"
    assert progress_summary({"done": 1.5, "total": 3.0, "percent": 50.0}) == "50% (1.5/3)"
    assert progress_summary({"done": 7}) == "7 done"
    assert len(progress_summary({"done": 1, "message": "m" * 1000})) <= 200
