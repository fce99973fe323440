"""The sweep wakes the academies whose jobs came due since it last looked, on an index of the
jobs that wait for a time (a ``run_at``: scheduled, or a retry's backoff), not by reading the
whole backlog and probing the fair queue once per academy in it, every second.

Revision ID: 0014_newly_due
Revises: 0013_channel_limits
Create Date: 2026-12-07 04:00:00
"""

from __future__ import annotations

from alembic import op

revision = "0014_newly_due"
down_revision = "0013_channel_limits"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.get_context().autocommit_block():
        op.execute(
            "CREATE INDEX CONCURRENTLY IF NOT EXISTS ix_job_executions_run_at "
            "ON job_executions (run_at) "
            "WHERE status = 'pending' AND run_at IS NOT NULL AND published_at IS NULL"
        )


def downgrade() -> None:
    with op.get_context().autocommit_block():
        op.execute("DROP INDEX CONCURRENTLY IF EXISTS ix_job_executions_run_at")
