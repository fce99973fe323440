"""Each academy's own limits on an outside channel (issue 25): ``tenant_channel_limits`` holds
its messages per second and per day on a channel (``kakao``, ``sms``, ...) and what happens to
what would go over the day's quota (``wait`` until the next day, or ``fail`` with the reason).
The provider's rate and the weighted shares live in Redis (app/run/quota.py); these are the
academy's plan, read by the senders at most a second late.

Revision ID: 0013_channel_limits
Revises: 0012_retention
Create Date: 2026-12-07 03:10:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0013_channel_limits"
down_revision = "0012_retention"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "tenant_channel_limits",
        sa.Column("tenant_id", sa.UUID(), nullable=False),
        sa.Column("channel", sa.Text(), nullable=False),
        sa.Column("rate", sa.Float(), nullable=True),
        sa.Column("daily", sa.Integer(), nullable=True),
        sa.Column("over_daily", sa.Text(), server_default=sa.text("'wait'"), nullable=False),
        sa.CheckConstraint("rate > 0", name=op.f("ck_tenant_channel_limits_rate")),
        sa.CheckConstraint("daily > 0", name=op.f("ck_tenant_channel_limits_daily")),
        sa.CheckConstraint("over_daily IN ('wait', 'fail')",
                           name=op.f("ck_tenant_channel_limits_over_daily")),
        sa.ForeignKeyConstraint(["tenant_id"], ["tenants.id"],
                                name=op.f("fk_tenant_channel_limits_tenant_id_tenants"),
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("tenant_id", "channel", name=op.f("pk_tenant_channel_limits")),
    )
    op.execute("REVOKE ALL ON tenant_channel_limits FROM PUBLIC")
    op.execute("ALTER TABLE tenant_channel_limits ENABLE ROW LEVEL SECURITY")
    op.execute("ALTER TABLE tenant_channel_limits FORCE ROW LEVEL SECURITY")
    op.execute("CREATE POLICY jobq_engine ON tenant_channel_limits TO current_user "
               "USING (true) WITH CHECK (true)")


def downgrade() -> None:
    op.drop_table("tenant_channel_limits")
