"""The ready-jobs index in the pick's own order (due time, then id), so a pick of a tenant's
next jobs reads those jobs and stops.

The fair pick and the hand-on take a tenant's next jobs ``ORDER BY coalesce(run_at,
created_at), id LIMIT n``. The index ended at the due time, so the planner read every waiting
job of the tenant (and its row, for the id) and sorted them, on every pick: with one academy's
5,000-job backlog handed out 50 at a time, a pick read on average the 2,500 entries still
waiting (``python -m bench held_pick``). With the id in the index, the scan is in the pick's
order and stops after n.

Revision ID: 0018_ready_in_pick_order
Revises: 0017_feed_from
Create Date: 2026-12-07 06:45:00
"""

from __future__ import annotations

from alembic import op

revision = "0018_ready_in_pick_order"
down_revision = "0017_feed_from"
branch_labels = None
depends_on = None

WHERE = "WHERE status = 'pending' AND published_at IS NULL"


def _swap(columns: str) -> None:
    with op.get_context().autocommit_block():
        op.execute("DROP INDEX CONCURRENTLY IF EXISTS ix_job_executions_ready_next")
        op.execute("CREATE INDEX CONCURRENTLY ix_job_executions_ready_next "
                   f"ON job_executions ({columns}) {WHERE}")
        op.execute("DROP INDEX CONCURRENTLY IF EXISTS ix_job_executions_ready")
        op.execute("ALTER INDEX ix_job_executions_ready_next RENAME TO ix_job_executions_ready")


def upgrade() -> None:
    _swap("queue, tenant_id, (coalesce(run_at, created_at)), id")


def downgrade() -> None:
    _swap("queue, tenant_id, (coalesce(run_at, created_at))")
