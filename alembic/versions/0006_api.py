"""The academies' HTTP API: API keys, approvals before execution, and tenant-bound API sessions.

* ``api_keys``: per-tenant keys (``tenant_id`` NULL: an operator key spanning tenants), stored
  as the SHA-256 of the secret (the secret has 256 random bits, so a plain hash is enough),
  with scopes, a request rate, when it was last used and when it was revoked. Only the engine
  reads it: row-level security is forced with the engine's policy alone, nothing is granted to
  the handler role.
* Jobs may wait for a person: ``awaiting_approval`` is a status of its own (the claim, the
  sweep and the fairness feeder take ``pending`` rows only, so nothing publishes or runs such a
  job), with ``approval_expires_at``. ``requested_by`` names who asked for a job (``api:web``,
  a JWT subject, ``cli:user@host``); the ``created`` event now carries it.
* **API requests are bound to their tenant the way handlers are**: the API logs in as the
  handler role and binds each transaction with ``jobq_bind_tenant(tenant, ticket)``, whose
  ticket is ``sha256(secret:tenant:backend_pid)``. The secret (``jobq_api_secret``, 256 random
  bits made here) is readable by the tables' owner only; the API process reads it through the
  engine's connection, handlers cannot. The binding is the same ``jobq_bindings`` row, so it
  ends with its transaction (``job_id`` is NULL for an API binding).

Revision ID: 0006_api
Revises: 0004
Create Date: 2026-11-29 20:10:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import context, op
from sqlalchemy import text
from sqlalchemy.dialects import postgresql

revision = "0006_api"
down_revision = "0005"
branch_labels = None
depends_on = None

DEFAULT_ROLE = "jobq_handler"
ENGINE_POLICY = "jobq_engine"

STATUSES_BEFORE = "status IN ('pending', 'processing', 'completed', 'failed', 'cancelled')"
STATUSES_AFTER = ("status IN ('pending', 'processing', 'completed', 'failed', 'cancelled', "
                  "'awaiting_approval')")

CREATED_EVENT_BEFORE = """
CREATE OR REPLACE FUNCTION jobq_record_created() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO job_events (job_id, attempt, kind, error, detail)
    SELECT id, 0,
           CASE WHEN status = 'failed' THEN 'refused' ELSE 'created' END,
           error_message,
           jsonb_strip_nulls(jsonb_build_object('source', source, 'run_at', run_at,
                                                'idempotency_key', idempotency_key,
                                                'parent_id', parent_id))
      FROM new_jobs;
    RETURN NULL;
END
$$
"""

#: The same, naming who asked and whether the job waits for an approval.
CREATED_EVENT_AFTER = """
CREATE OR REPLACE FUNCTION jobq_record_created() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO job_events (job_id, attempt, kind, error, detail)
    SELECT id, 0,
           CASE WHEN status = 'failed' THEN 'refused' ELSE 'created' END,
           error_message,
           jsonb_strip_nulls(jsonb_build_object(
               'source', source, 'run_at', run_at, 'idempotency_key', idempotency_key,
               'parent_id', parent_id, 'by', requested_by,
               'awaiting_approval', CASE WHEN status = 'awaiting_approval' THEN true END,
               'approval_expires_at', approval_expires_at))
      FROM new_jobs;
    RETURN NULL;
END
$$
"""


def _bind_tenant(schema: str) -> str:
    return f"""
    CREATE FUNCTION {schema}.jobq_bind_tenant(tenant uuid, ticket text) RETURNS uuid
        LANGUAGE plpgsql VOLATILE SECURITY DEFINER PARALLEL UNSAFE
        SET search_path = pg_catalog, pg_temp
    AS $$
    BEGIN
        IF NOT EXISTS (
            SELECT 1 FROM {schema}.jobq_api_secret s
             WHERE pg_catalog.encode(pg_catalog.sha256(pg_catalog.convert_to(
                       s.secret || ':' || tenant::text || ':'
                       || pg_catalog.pg_backend_pid()::text, 'UTF8')), 'hex') = ticket)
        THEN
            RAISE EXCEPTION 'tenant % is not bound by this ticket', tenant
                USING ERRCODE = 'insufficient_privilege',
                      HINT = 'the API binds a request''s transaction to its tenant';
        END IF;
        INSERT INTO {schema}.jobq_bindings (pid, xid, bound_tenant, job_id)
        VALUES (pg_catalog.pg_backend_pid(), pg_catalog.pg_current_xact_id()::text::bigint,
                tenant, NULL)
        ON CONFLICT (pid) DO UPDATE
            SET xid = EXCLUDED.xid, bound_tenant = EXCLUDED.bound_tenant, job_id = NULL;
        RETURN tenant;
    END
    $$
    """


def _schema(conn) -> str:
    return conn.execute(text("SELECT quote_ident(current_schema())")).scalar()


def _handler_role(conn) -> str:
    role = context.config.attributes.get("handler_role") or DEFAULT_ROLE
    return conn.execute(text("SELECT quote_ident(:r)"), {"r": role}).scalar()


def _owner(conn) -> str:
    return conn.execute(text(
        "SELECT quote_ident(pg_get_userbyid(relowner)) FROM pg_class "
        "WHERE oid = to_regclass('job_executions')")).scalar()


def upgrade() -> None:
    conn = op.get_bind()
    schema = _schema(conn)
    role = _handler_role(conn)

    op.create_table(
        "api_keys",
        sa.Column("id", sa.UUID(), server_default=sa.text("gen_random_uuid()"), nullable=False),
        sa.Column("tenant_id", sa.UUID(), nullable=True),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("prefix", sa.Text(), nullable=False),
        sa.Column("key_hash", sa.Text(), nullable=False),
        sa.Column("scopes", postgresql.ARRAY(sa.Text()), nullable=False),
        sa.Column("rate_limit", sa.Float(), nullable=True),
        sa.Column("created_by", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"),
                  nullable=False),
        sa.Column("last_used_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["tenant_id"], ["tenants.id"],
                                name=op.f("fk_api_keys_tenant_id_tenants"), ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_api_keys")),
        sa.UniqueConstraint("key_hash", name=op.f("uq_api_keys_key_hash")),
    )
    op.create_index("uq_api_keys_tenant_name", "api_keys",
                    [sa.literal_column("coalesce(tenant_id, '00000000-0000-0000-0000-000000000000'::uuid)"), "name"],
                    unique=True, postgresql_where=sa.text("revoked_at IS NULL"))
    owner = _owner(conn)
    op.execute('ALTER TABLE "api_keys" ENABLE ROW LEVEL SECURITY')
    op.execute('ALTER TABLE "api_keys" FORCE ROW LEVEL SECURITY')
    op.execute(f'CREATE POLICY {ENGINE_POLICY} ON "api_keys" TO {owner} '
               "USING (true) WITH CHECK (true)")

    op.drop_constraint(op.f("ck_job_executions_status"), "job_executions", type_="check")
    op.create_check_constraint(op.f("ck_job_executions_status"), "job_executions", STATUSES_AFTER)
    op.add_column("job_executions", sa.Column("requested_by", sa.Text(), nullable=True))
    op.add_column("job_executions", sa.Column("approval_expires_at", sa.DateTime(timezone=True),
                                              nullable=True))
    op.create_index("ix_job_executions_awaiting", "job_executions", ["approval_expires_at"],
                    unique=False, postgresql_where=sa.text("status = 'awaiting_approval'"))
    op.execute(CREATED_EVENT_AFTER)

    op.create_table(
        "jobq_api_secret",
        sa.Column("one", sa.Boolean(), server_default=sa.text("true"), nullable=False),
        sa.Column("secret", sa.Text(), nullable=False),
        sa.CheckConstraint("one", name=op.f("ck_jobq_api_secret_one")),
        sa.PrimaryKeyConstraint("one", name=op.f("pk_jobq_api_secret")),
    )
    op.execute("REVOKE ALL ON jobq_api_secret FROM PUBLIC")
    op.execute("INSERT INTO jobq_api_secret (secret) "
               "VALUES (encode(sha256(gen_random_uuid()::text::bytea || "
               "gen_random_uuid()::text::bytea || clock_timestamp()::text::bytea), 'hex'))")
    op.alter_column("jobq_bindings", "job_id", existing_type=sa.UUID(), nullable=True)
    op.execute(_bind_tenant(schema))
    op.execute(f"REVOKE ALL ON FUNCTION {schema}.jobq_bind_tenant(uuid, text) FROM PUBLIC")
    op.execute(f"GRANT EXECUTE ON FUNCTION {schema}.jobq_bind_tenant(uuid, text) TO {role}")


def downgrade() -> None:
    conn = op.get_bind()
    schema = _schema(conn)
    op.execute(f"DROP FUNCTION IF EXISTS {schema}.jobq_bind_tenant(uuid, text)")
    op.execute("DELETE FROM jobq_bindings WHERE job_id IS NULL")
    op.alter_column("jobq_bindings", "job_id", existing_type=sa.UUID(), nullable=False)
    op.drop_table("jobq_api_secret")

    op.execute(CREATED_EVENT_BEFORE)
    # 0004 knows no approvals: a job still waiting for one will never be approved there.
    op.execute("UPDATE job_executions SET status = 'cancelled', completed_at = now(), "
               "error_message = 'approval withdrawn by a schema downgrade' "
               "WHERE status = 'awaiting_approval'")
    op.drop_index("ix_job_executions_awaiting", table_name="job_executions")
    op.drop_column("job_executions", "approval_expires_at")
    op.drop_column("job_executions", "requested_by")
    op.drop_constraint(op.f("ck_job_executions_status"), "job_executions", type_="check")
    op.create_check_constraint(op.f("ck_job_executions_status"), "job_executions",
                               STATUSES_BEFORE)

    op.drop_index("uq_api_keys_tenant_name", table_name="api_keys")
    op.drop_table("api_keys")
