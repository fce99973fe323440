"""A job refused with parameters that could not be stored says so: ``params_dropped``.

A request refused because its ``intent_params`` cannot be stored (larger than
JOBQ_MAX_PARAMS_BYTES, not a JSON object, NaN, NUL, nested too deep) keeps its failed row with
``intent_params`` NULL. NULL also means "no parameters" (a plain ``INSERT`` without them runs on
the intent's defaults), so a retry of such a row ran on defaults the caller never sent. With
the flag set, a retry needs new parameters and a worker refuses to run the row without them.

Rows refused before this revision are flagged by what they show: failed before any attempt,
no parameters, and a refusal of ``intent_params`` itself (the only refusals that drop them).

Revision ID: 0008_params_not_kept
Revises: 0007_published
Create Date: 2026-12-07 05:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008_params_not_kept"
down_revision = "0007_published"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("job_executions", sa.Column(
        "params_dropped", sa.Boolean(), server_default=sa.text("false"), nullable=False))
    op.execute(
        "UPDATE job_executions SET params_dropped = true "
        " WHERE status = 'failed' AND executed_at IS NULL AND intent_params IS NULL "
        "   AND source <> 'sql' AND error_message LIKE 'intent\\_params%'"
    )


def downgrade() -> None:
    op.drop_column("job_executions", "params_dropped")
