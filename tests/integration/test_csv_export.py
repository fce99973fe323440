"""The ``COPY`` side of CSV cells a spreadsheet does not run (app.core.csv_export): PostgreSQL
neutralises a text cell exactly as the Python side does."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import text

from app.core.csv_export import FORMULA_STARTS, safe_cell, safe_text_sql
from app.store import db

#: Text PostgreSQL can store, often starting like a formula.
texts = st.one_of(
    st.text(st.characters(exclude_categories=("Cs",), exclude_characters="\x00")),
    st.tuples(st.sampled_from((*FORMULA_STARTS, "'", "＝", " ")), st.text(max_size=20)
              .filter(lambda t: "\x00" not in t)).map("".join),
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(texts, min_size=1, max_size=20))
def test_sql_neutralises_text_as_python_does(values):
    with db.engine().connect() as conn:
        shown = conn.execute(
            text(f"SELECT {safe_text_sql('v')} FROM unnest(CAST(:values AS text[])) "
                 "WITH ORDINALITY AS t(v, i) ORDER BY i"), {"values": values}).scalars().all()
    assert shown == [safe_cell(v) for v in values]
