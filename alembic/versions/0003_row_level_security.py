"""Row-level security: a tenant's session sees and changes only its own tenant's rows.

Every table with a ``tenant_id`` column (read from the catalog, so a table added to 0002 later
is covered too), ``tenants`` itself and ``job_events`` (through its job) get a policy on the
transaction's ``app.tenant_id``. It binds the NOLOGIN role ``jobq_tenant``, which handlers'
sessions switch to (``SET LOCAL ROLE``, see app.db.bind_tenant); the engine's own connections
log in as the tables' owner, which row-level security does not bind. The first migration in a
cluster creates the role, so the migrating user needs CREATEROLE then (or an administrator
creates ``jobq_tenant`` and grants it to that user beforehand).

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-26 08:10:00
"""

from __future__ import annotations

from alembic import op
from sqlalchemy import text

revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None

#: app.db.TENANT_ROLE (a migration does not import the application it migrates).
ROLE = "jobq_tenant"
POLICY = "tenant_isolation"
#: The transaction's tenant; NULL (so no row at all) when it is unset, or reset to '' after a
#: transaction that set it locally.
CURRENT_TENANT = "nullif(current_setting('app.tenant_id', true), '')::uuid"

#: The audit trail is the engine's: a handler may add to it (its completion, the jobs it
#: fans out) but never delete from it.
PRIVILEGES = {"job_executions": "SELECT, INSERT, UPDATE", "job_events": "SELECT, INSERT",
              "tenants": "SELECT"}
DEFAULT_PRIVILEGES = "SELECT, INSERT, UPDATE, DELETE"

TENANT_TABLES = text(
    """
    SELECT c.relname
      FROM pg_class c
      JOIN pg_namespace n ON n.oid = c.relnamespace
      JOIN pg_attribute a ON a.attrelid = c.oid
     WHERE n.nspname = current_schema() AND c.relkind IN ('r', 'p')
       AND a.attname = 'tenant_id' AND NOT a.attisdropped
     ORDER BY c.relname
    """
)

#: Sequences behind the tables' identity and serial columns (inserts need them).
OWNED_SEQUENCES = text(
    """
    SELECT s.relname
      FROM pg_class s
      JOIN pg_depend d ON d.objid = s.oid AND d.classid = 'pg_class'::regclass
                      AND d.refclassid = 'pg_class'::regclass
      JOIN pg_class t ON t.oid = d.refobjid
     WHERE s.relkind = 'S' AND t.relname = ANY(:tables)
       AND t.relnamespace = (SELECT oid FROM pg_namespace WHERE nspname = current_schema())
     ORDER BY s.relname
    """
)

# Roles belong to the whole cluster: another database (or a migration running beside this one)
# may have created it already.
CREATE_ROLE = f"""
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{ROLE}') THEN
        CREATE ROLE {ROLE} NOLOGIN;
    END IF;
EXCEPTION WHEN duplicate_object OR unique_violation THEN
    NULL;
END
$$
"""

# The engine logs in as the migrating user; it must be able to switch to the role.
GRANT_ROLE = f"""
DO $$
BEGIN
    IF NOT pg_has_role(current_user, '{ROLE}', 'MEMBER') THEN
        EXECUTE format('GRANT {ROLE} TO %I', current_user);
    END IF;
END
$$
"""


def _policy(table: str) -> str:
    if table == "tenants":
        return f"id = {CURRENT_TENANT}"
    if table == "job_events":  # no tenant_id of its own: it is the tenant's when its job is
        return "EXISTS (SELECT 1 FROM job_executions j WHERE j.id = job_events.job_id)"
    return f"tenant_id = {CURRENT_TENANT}"


def upgrade() -> None:
    conn = op.get_bind()
    op.execute(CREATE_ROLE)
    op.execute(GRANT_ROLE)
    op.execute(f"GRANT USAGE ON SCHEMA {_schema(conn)} TO {ROLE}")
    tables = [r[0] for r in conn.execute(TENANT_TABLES)]
    tables += [t for t in ("tenants", "job_events") if t not in tables]
    for table in tables:
        rule = _policy(table)
        op.execute(f'ALTER TABLE "{table}" ENABLE ROW LEVEL SECURITY')
        op.execute(f'CREATE POLICY {POLICY} ON "{table}" TO {ROLE} '
                   f"USING ({rule}) WITH CHECK ({rule})")
        op.execute(f'GRANT {PRIVILEGES.get(table, DEFAULT_PRIVILEGES)} ON "{table}" TO {ROLE}')
    for sequence in [r[0] for r in conn.execute(OWNED_SEQUENCES, {"tables": tables})]:
        op.execute(f'GRANT USAGE, SELECT ON SEQUENCE "{sequence}" TO {ROLE}')


def downgrade() -> None:
    conn = op.get_bind()
    tables = [r[0] for r in conn.execute(text(
        "SELECT tablename FROM pg_policies WHERE schemaname = current_schema() "
        "AND policyname = :policy ORDER BY tablename"), {"policy": POLICY})]
    for sequence in [r[0] for r in conn.execute(OWNED_SEQUENCES, {"tables": tables})]:
        op.execute(f'REVOKE ALL ON SEQUENCE "{sequence}" FROM {ROLE}')
    for table in tables:
        op.execute(f'DROP POLICY {POLICY} ON "{table}"')
        op.execute(f'ALTER TABLE "{table}" DISABLE ROW LEVEL SECURITY')
        op.execute(f'REVOKE ALL ON "{table}" FROM {ROLE}')
    op.execute(f"REVOKE USAGE ON SCHEMA {_schema(conn)} FROM {ROLE}")
    # The role stays: it belongs to the cluster, and other databases may use it.


def _schema(conn) -> str:
    return conn.execute(text("SELECT quote_ident(current_schema())")).scalar()
