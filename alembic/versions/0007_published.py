"""The sweep finds published jobs that never started on an index of their own.

``ix_job_executions_published``: pending jobs handed to the broker, by when they were
published (``published_at``). The sweep republishes those published long ago (or before the
broker's Redis lost its data): read on this index, in that order, it touches only the few
jobs the broker holds. Without it the planner, which sees most rows of the table published
long ago (every finished job was), walked the whole backlog of pending jobs on
``ix_job_executions_due`` and fetched each row to look at its ``published_at``: 11 ms a sweep
with 10,000 finished jobs in the table and 100,000 pending, 370 ms with 10,000,000 (the
backlog's rows no longer stay in the cache), every second (``python -m bench scale``).

Built concurrently: on a large table a plain CREATE INDEX would hold off every claim while it
reads the table.

Revision ID: 0007_published
Revises: 0006_api
Create Date: 2026-11-29 23:45:00
"""

from __future__ import annotations

from alembic import op

revision = "0007_published"
down_revision = "0006_api"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.get_context().autocommit_block():
        op.execute(
            "CREATE INDEX CONCURRENTLY IF NOT EXISTS ix_job_executions_published "
            "ON job_executions (published_at) "
            "WHERE status = 'pending' AND published_at IS NOT NULL"
        )


def downgrade() -> None:
    with op.get_context().autocommit_block():
        op.execute("DROP INDEX CONCURRENTLY IF EXISTS ix_job_executions_published")
