"""CSV that a spreadsheet opens as data: a text cell that starts like a formula (``=``, ``+``,
``-``, ``@``, a tab or a carriage return) gets a leading single quote, OWASP's advice against
CSV injection, so Excel shows it as text instead of running it. One rule for both ways jobq
writes CSV: rows written from Python (:func:`safe_writer`) and PostgreSQL's ``COPY``
(:func:`safe_text_sql`). Numbers typed as numbers are left alone: a negative amount stays a
number a spreadsheet can add up; only text is quoted, also text that reads like a number."""

from __future__ import annotations

import csv
from collections.abc import Iterable
from typing import Any

#: What a spreadsheet takes as the start of a formula (OWASP's list).
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def safe_cell(value: Any) -> Any:
    """``value`` as a CSV cell may hold it: text starting like a formula gets a ``'`` first;
    anything else (numbers, dates, None) is returned as it is."""
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return "'" + value
    return value


class SafeWriter:
    """:func:`csv.writer` whose every cell goes through :func:`safe_cell`."""

    def __init__(self, writer: Any) -> None:
        self._writer = writer

    def writerow(self, row: Iterable[Any]) -> Any:
        return self._writer.writerow([safe_cell(v) for v in row])

    def writerows(self, rows: Iterable[Iterable[Any]]) -> None:
        for row in rows:
            self.writerow(row)


def safe_writer(fh: Any, **options: Any) -> SafeWriter:
    """A CSV writer on ``fh`` (``csv.writer``'s options) that neutralises formula cells."""
    return SafeWriter(csv.writer(fh, **options))


def safe_text_sql(expression: str) -> str:
    """SQL for the text ``expression`` as :func:`safe_cell` writes it (for a ``COPY`` of text
    columns; leave numeric columns out of it)."""
    starts = ", ".join(f"chr({ord(c)})" for c in FORMULA_STARTS)
    return (f"CASE WHEN left({expression}, 1) IN ({starts}) "
            f"THEN '''' || {expression} ELSE {expression} END")
