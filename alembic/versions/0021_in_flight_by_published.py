"""The window's count reads the last second of hand-offs, not every one a held horizon keeps.

A feeder's look counted the jobs handed to the broker and not started (``published_at`` set,
still pending) on ``ix_job_executions_in_flight`` and took the smaller of that and the queue's
list in Redis, or what was stamped in the last second if more. While a transaction held the
xmin horizon, every job that ever passed through that state left an entry there: ten minutes
at 50 jobs/s, 12,368 buffers and 20 ms a look (``python -m bench pressure --scenarios
idle_tx --pressure-seconds 600``). When the broker's length is known the look now counts only
what was stamped in the last second, on this index's second column, and takes the larger of
that and the list (the list is the smaller in every case but messages the broker holds for jobs
no longer waiting: those it now counts, so a look feeds less, never more).

Revision ID: 0021_in_flight_by_published
Revises: 0020_stats_rollup
Create Date: 2026-12-07 10:45:00
"""

from __future__ import annotations

from alembic import op

revision = "0021_in_flight_by_published"
down_revision = "0020_stats_rollup"
branch_labels = None
depends_on = None

_WHERE = "WHERE status = 'pending' AND published_at IS NOT NULL"


def _replace(columns: str) -> None:
    with op.get_context().autocommit_block():
        op.execute("DROP INDEX CONCURRENTLY IF EXISTS ix_job_executions_in_flight")
        op.execute("CREATE INDEX CONCURRENTLY ix_job_executions_in_flight "
                   f"ON job_executions ({columns}) {_WHERE}")


def upgrade() -> None:
    _replace("queue, published_at")


def downgrade() -> None:
    _replace("queue")
