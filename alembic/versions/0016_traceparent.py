"""Every job keeps the trace it was asked for in: ``traceparent``, the W3C Trace Context of the
span that wrote its row (``POST /v1/jobs``, ``dispatch_intent``, ``submit``), so its wait, each
attempt (a retry hours later, a corrected retry from the console) and the handler's outside
calls join that one trace (app/core/tracing.py).

A column of its own rather than a key inside ``intent_params`` or ``checkpoint``: those belong to
the handler and to the caller (retried on corrected parameters, shown in the console, compared
by idempotency keys), and the claim returns this with the row it already reads. NULL (tracing
off where the job was asked for, a plain ``INSERT``): its runs trace under the job's own id.
A nullable column without a default: adding it rewrites nothing.

Revision ID: 0016_traceparent
Revises: 0015_hand_on_waits
Create Date: 2026-12-07 06:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0016_traceparent"
down_revision = "0015_hand_on_waits"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("job_executions", sa.Column("traceparent", sa.Text(), nullable=True))


def downgrade() -> None:
    op.drop_column("job_executions", "traceparent")
