"""The statistics read a window's rolled hours as a few rows a day (spans of each recent day)
and its partial first hour in ten-minute parts.

``jobq stats --since 24h`` read each academy's rolled hours as its four-hour blocks and the
hours left over (about eight rows an academy, 8,000 at 1,000 academies) and each intent's as its
24 hours (about 1,300 rows): 139 ms at 10 M rows against a target of 100 ms. Each of the last
:data:`app.store.rollup.SPAN_DAYS` days now also keeps its spans, made from its rolled hours'
rows as each hour is rolled: per academy (levels 4, 5) and per intent and end state (6, 7), the
day from its start up to and with each rolled hour, and, once its last hour is rolled, from
each hour to its end. A window that crosses midnight reads its first day as one row a key
(from its first hour to midnight) and its last as another (midnight to its last rolled hour);
a whole day in between is the span to its last hour.

Each hour of the last two days is also kept in its six ten-minute parts (levels 8 per intent
and end state, 9 per academy; ``part`` 0-5, made with the hour, stamped ``parts_at``): a
window's partial first hour is read from the parts after its start and from the jobs only up
to the next part (at most ten minutes of them, not up to an hour).

``job_stats_hours.prefix_at`` / ``suffix_at`` stamp when the spans at an hour were made: a
reader uses a span only if no hour it reaches changed since its roll (``changes``) or was
rolled after the span was made, else it reads that day's hours as before. Days rolled before
this migration get their spans from the caretaker (newest first, within its time budget);
until then they are read as before. Spans of older days are dropped; no new table (the rows
live in ``job_stats_hourly``, under its row-level security, and go with their academy).

Revision ID: 0023_stats_day_spans
Revises: 0022_fast_inserts
Create Date: 2026-12-07 13:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0023_stats_day_spans"
down_revision = "0022_fast_inserts"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("job_stats_hours", sa.Column("prefix_at", sa.DateTime(timezone=True)))
    op.add_column("job_stats_hours", sa.Column("suffix_at", sa.DateTime(timezone=True)))
    op.add_column("job_stats_hours", sa.Column("parts_at", sa.DateTime(timezone=True)))
    op.add_column("job_stats_hourly", sa.Column("part", sa.SmallInteger()))
    op.drop_constraint(op.f("ck_job_stats_hourly_level"), "job_stats_hourly", type_="check")
    op.create_check_constraint(op.f("ck_job_stats_hourly_level"), "job_stats_hourly",
                               sa.text("level BETWEEN 1 AND 9"))


def downgrade() -> None:
    op.execute("DELETE FROM job_stats_hourly WHERE level > 3")
    op.drop_constraint(op.f("ck_job_stats_hourly_level"), "job_stats_hourly", type_="check")
    op.create_check_constraint(op.f("ck_job_stats_hourly_level"), "job_stats_hourly",
                               sa.text("level IN (1, 2, 3)"))
    op.drop_column("job_stats_hourly", "part")
    op.drop_column("job_stats_hours", "parts_at")
    op.drop_column("job_stats_hours", "suffix_at")
    op.drop_column("job_stats_hours", "prefix_at")
