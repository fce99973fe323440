"""Retention per academy and per end state, deleted in index order.

``tenants.keep_completed_days`` / ``keep_failed_days`` / ``keep_cancelled_days``: how long an
academy's finished jobs are kept in each end state (NULL: the deployment's default, settings
``JOBQ_RETENTION_DAYS`` / ``JOBQ_RETENTION_FAILED_DAYS``). Some academies keep a year for billing
disputes; failures are kept longer than successes.

``ix_job_executions_expiry``: finished jobs by academy, end state and when they finished. Retention
walks each (academy, state) from its oldest row up to that rule's cutoff, a keyset batch at a
time, so a row it keeps (another state's, another academy's longer rule) is never read, and no
batch reads again what the previous one went past. On ``ix_job_executions_finished`` (finished
jobs by ``completed_at`` alone) every batch started again at the oldest finished row and walked
past everything the rules keep.

Built concurrently: on a large table a plain CREATE INDEX would hold off every claim while it
reads the table.

Revision ID: 0012_retention
Revises: 0011_hand_on
Create Date: 2026-12-07 03:10:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012_retention"
down_revision = "0011_hand_on"
branch_labels = None
depends_on = None

_STATES = ("completed", "failed", "cancelled")


def upgrade() -> None:
    for state in _STATES:
        op.add_column("tenants", sa.Column(f"keep_{state}_days", sa.Integer(), nullable=True))
        op.create_check_constraint(op.f(f"ck_tenants_keep_{state}_days"), "tenants",
                                   f"keep_{state}_days > 0")
    with op.get_context().autocommit_block():
        op.execute(
            "CREATE INDEX CONCURRENTLY IF NOT EXISTS ix_job_executions_expiry "
            "ON job_executions (tenant_id, status, completed_at, id) "
            "WHERE status IN ('completed', 'failed', 'cancelled')"
        )


def downgrade() -> None:
    with op.get_context().autocommit_block():
        op.execute("DROP INDEX CONCURRENTLY IF EXISTS ix_job_executions_expiry")
    for state in _STATES:
        op.drop_constraint(op.f(f"ck_tenants_keep_{state}_days"), "tenants", type_="check")
        op.drop_column("tenants", f"keep_{state}_days")
