"""An idempotency key names one request of a tenant: a repeat that asks for something else is
a conflict, not the old job.

* ``request_hash``: the SHA-256 of the canonical JSON of the request a key was first given
  with (intent, parameters as given, ``run_at``; app.core.validation.request_fingerprint).
  A repeat under the key is compared with it; a row without it (a plain ``INSERT`` that named
  a key, or a job from before this revision) is compared with what its columns ask for.
* ``uq_job_executions_tenant_idempotency`` on ``(tenant_id, idempotency_key)`` replaces the key
  per tenant *and intent*: reused for another intent, a key now meets the job it names instead
  of quietly making a second one (as payment APIs scope their keys to the account).

Jobs that already share a key across intents of one tenant stop the upgrade, named, before
anything changes: which of them the key should name is the operator's call. Both indexes are
built and dropped concurrently, so claims and inserts go on meanwhile (as in 0007).

Revision ID: 0009_idempotency_request
Revises: 0008_params_not_kept
Create Date: 2026-12-07 05:30:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009_idempotency_request"
down_revision = "0008_params_not_kept"
branch_labels = None
depends_on = None

SHARED_KEYS = """
    SELECT tenant_id::text, idempotency_key, string_agg(DISTINCT intent_key, ', ') AS intents,
           count(*) OVER () AS total
      FROM job_executions
     WHERE idempotency_key IS NOT NULL
     GROUP BY tenant_id, idempotency_key
    HAVING count(*) > 1
     LIMIT 5
"""


def upgrade() -> None:
    shared = op.get_bind().execute(sa.text(SHARED_KEYS)).all()
    if shared:
        listed = "; ".join(f"tenant {t} key {k!r}: {i}" for t, k, i, _ in shared)
        raise RuntimeError(
            f"{shared[0][3]} idempotency key(s) each name jobs of more than one intent of a "
            f"tenant ({listed}). From this revision a key names one request of a tenant: "
            "clear the key of the jobs it should no longer name (UPDATE job_executions SET "
            "idempotency_key = NULL WHERE id = ...) and migrate again.")
    op.add_column("job_executions", sa.Column("request_hash", sa.Text(), nullable=True))
    with op.get_context().autocommit_block():
        # A build that failed half-way (a key shared meanwhile) leaves an invalid index behind.
        op.execute("DROP INDEX CONCURRENTLY IF EXISTS uq_job_executions_tenant_idempotency")
        op.execute(
            "CREATE UNIQUE INDEX CONCURRENTLY uq_job_executions_tenant_idempotency "
            "ON job_executions (tenant_id, idempotency_key) WHERE idempotency_key IS NOT NULL")
        op.execute("DROP INDEX CONCURRENTLY IF EXISTS uq_job_executions_idempotency")


def downgrade() -> None:
    with op.get_context().autocommit_block():
        op.execute(
            "CREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS uq_job_executions_idempotency "
            "ON job_executions (tenant_id, intent_key, idempotency_key) "
            "WHERE idempotency_key IS NOT NULL")
        op.execute("DROP INDEX CONCURRENTLY IF EXISTS uq_job_executions_tenant_idempotency")
    op.drop_column("job_executions", "request_hash")
