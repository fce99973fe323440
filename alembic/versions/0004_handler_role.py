"""Handlers log in as a role of their own, bound to one tenant by what they cannot forge.

Until 0003, a handler's session was the engine's own connection (the tables' owner) after
``SET LOCAL ROLE jobq_tenant`` and ``set_config('app.tenant_id', ...)``: ``RESET ROLE`` made it
the owner again, and setting ``app.tenant_id`` moved it into another tenant. Now:

* **A login role for handlers** (``jobq_handler``, the user of ``JOBQ_HANDLER_DATABASE_URL``):
  no superuser, no BYPASSRLS, owns nothing, is no member of the engine's role. Its
  connections cannot become anything else: ``RESET ROLE`` and ``RESET SESSION
  AUTHORIZATION`` leave it itself, ``SET ROLE`` and ``SET SESSION AUTHORIZATION`` are refused.
  It has only what handlers need: the domain tables, its tenant's jobs (read, add, update:
  its own completion and the jobs it fans out) and their events (read, add), its own tenant
  row (read). Nothing else: not ``job_schedules``, ``tenant_events``, ``alembic_version``.
* **Row-level security FORCEd** on every table with a ``tenant_id`` (read from the catalog,
  so a table added to 0002 later is covered), ``tenants`` and ``job_events``: the owner's
  sessions are bound too. The engine's own connections (claims, sweeps, recovery, dispatch)
  see everything through an explicit policy for the tables' owner, ``jobq_engine``.
* **The tenant is bound per transaction by the engine, unforgeably.** The policies compare
  ``tenant_id`` with ``jobq_current_tenant()``, a SECURITY DEFINER function reading
  ``jobq_bindings`` (unlogged; the handler role can neither read nor write it): the row of
  this backend (``pg_backend_pid()``) written by this very transaction
  (``pg_current_xact_id()``), so a binding ends with its transaction and never reaches the
  next user of a pooled connection. Only ``jobq_bind(job, ticket)`` (SECURITY DEFINER)
  writes it, and only when ``ticket`` is ``sha256(job:lease_owner:backend_pid)`` of a job that
  is ``processing``: the lease owner's 128 random bits are the secret, known to the run that
  claimed the job (and readable from the table only by its own tenant), and the backend pid
  makes a ticket seen elsewhere (say in ``pg_stat_activity``) useless on any other
  connection. The engine sends it as the transaction begins (app.db.bind_job): one round
  trip per transaction, as before. ``set_config('app.tenant_id', ...)`` now means nothing.
* **What other handlers send stays private**: the role's sessions do not report their
  statements (``track_activities = off`` for the role), since every handler session is the
  same role and PostgreSQL shows a role its own sessions' statements, other tenants' values
  included. That needs a superuser; without one the migration says so and goes on (the
  bind tickets stay useless elsewhere either way).

The role belongs to the cluster. The migration creates it (with the password of
``JOBQ_HANDLER_DATABASE_URL``, sent as a SCRAM verifier, never in clear) when the migrating
user may (superuser or CREATEROLE); otherwise a database administrator creates it first::

    CREATE ROLE jobq_handler LOGIN PASSWORD '...';
    ALTER ROLE jobq_handler SET track_activities = off;

and the migration checks what it finds (no superuser, no BYPASSRLS, not a member of the
migrating role, owning nothing here), then grants. It also adds tenants' ``deleted`` status and
the ``tenant_events`` audit of status changes.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-29 09:00:00
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os

import sqlalchemy as sa
from alembic import context, op
from sqlalchemy import text
from sqlalchemy.dialects import postgresql

revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None

#: app.settings.HANDLER_ROLE (a migration does not import the application it migrates); env.py
#: passes the user of JOBQ_HANDLER_DATABASE_URL as ``handler_role`` when it names another.
DEFAULT_ROLE = "jobq_handler"
TENANT_POLICY = "tenant_isolation"
ENGINE_POLICY = "jobq_engine"
#: Once per statement (an InitPlan), not once per row as a bare STABLE call in a filter would.
CURRENT_TENANT = "(SELECT jobq_current_tenant())"

#: Tenant tables only the engine uses: bound for its own sessions, out of handlers' reach.
ENGINE_ONLY = ("job_schedules", "tenant_events")
#: The audit trail is the engine's: a handler may add to it (its completion, the jobs it fans
#: out) but never delete from it.
PRIVILEGES = {"job_executions": "SELECT, INSERT, UPDATE", "job_events": "SELECT, INSERT",
              "tenants": "SELECT"}
DEFAULT_PRIVILEGES = "SELECT, INSERT, UPDATE, DELETE"

TENANT_TABLES = text(
    """
    SELECT c.relname, quote_ident(pg_get_userbyid(c.relowner))
      FROM pg_class c
      JOIN pg_namespace n ON n.oid = c.relnamespace
     WHERE n.nspname = current_schema() AND c.relkind IN ('r', 'p')
       AND c.relname <> 'jobq_bindings'
       AND (c.relname IN ('tenants', 'job_events')
            OR EXISTS (SELECT 1 FROM pg_attribute a WHERE a.attrelid = c.oid
                        AND a.attname = 'tenant_id' AND NOT a.attisdropped))
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

#: What makes a role unfit to run handlers, as one line each; empty when it is fit.
ROLE_PROBLEMS = text(
    """
    SELECT problem FROM (
        SELECT 'is a superuser' AS problem FROM pg_roles WHERE rolname = :role AND rolsuper
        UNION ALL
        SELECT 'has BYPASSRLS' FROM pg_roles WHERE rolname = :role AND rolbypassrls
        UNION ALL
        SELECT 'is the migrating user itself' WHERE :role = current_user
        UNION ALL
        SELECT 'is a member of ' || current_user || ', which owns the tables'
         WHERE :role <> current_user AND pg_has_role(:role, current_user, 'MEMBER')
        UNION ALL
        SELECT 'owns ' || c.relname FROM pg_class c
         WHERE c.relowner = (SELECT oid FROM pg_roles WHERE rolname = :role)
           AND c.relnamespace = (SELECT oid FROM pg_namespace WHERE nspname = current_schema())
    ) found
    """
)


def _functions(schema: str) -> list[str]:
    """``jobq_current_tenant()`` and ``jobq_bind(job, ticket)``: schema-qualified inside, with a
    search path of pg_catalog only, so nothing a caller creates can stand in for what they use."""
    return [
        f"""
        CREATE FUNCTION {schema}.jobq_current_tenant() RETURNS uuid
            LANGUAGE sql STABLE SECURITY DEFINER PARALLEL RESTRICTED
            SET search_path = pg_catalog, pg_temp
        AS $$
            SELECT b.bound_tenant FROM {schema}.jobq_bindings b
             WHERE b.pid = pg_catalog.pg_backend_pid()
               AND b.xid = pg_catalog.pg_current_xact_id_if_assigned()::text::bigint
        $$
        """,
        f"""
        CREATE FUNCTION {schema}.jobq_bind(job uuid, ticket text) RETURNS uuid
            LANGUAGE plpgsql VOLATILE SECURITY DEFINER PARALLEL UNSAFE
            SET search_path = pg_catalog, pg_temp
        AS $$
        DECLARE
            bound uuid;
        BEGIN
            SELECT j.tenant_id INTO bound
              FROM {schema}.job_executions j
             WHERE j.id = job AND j.status = 'processing' AND j.lease_owner IS NOT NULL
               AND pg_catalog.encode(pg_catalog.sha256(pg_catalog.convert_to(
                       j.id::text || ':' || j.lease_owner || ':'
                       || pg_catalog.pg_backend_pid()::text, 'UTF8')), 'hex') = ticket;
            IF bound IS NULL THEN
                RAISE EXCEPTION 'job % is not running under this binding', job
                    USING ERRCODE = 'insufficient_privilege',
                          HINT = 'the engine binds a handler''s transaction to the job it runs';
            END IF;
            INSERT INTO {schema}.jobq_bindings (pid, xid, bound_tenant, job_id)
            VALUES (pg_catalog.pg_backend_pid(), pg_catalog.pg_current_xact_id()::text::bigint,
                    bound, job)
            ON CONFLICT (pid) DO UPDATE
                SET xid = EXCLUDED.xid, bound_tenant = EXCLUDED.bound_tenant,
                    job_id = EXCLUDED.job_id;
            RETURN bound;
        END
        $$
        """,
    ]


def scram_verifier(password: str, iterations: int = 4096) -> str:
    """What PostgreSQL stores for a SCRAM-SHA-256 password (RFC 5802/7677), so the password
    itself never appears in a statement (nor in a server log of statements)."""
    salt = os.urandom(16)
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
    server_key = hmac.new(salted, b"Server Key", hashlib.sha256).digest()
    stored_key = hashlib.sha256(client_key).digest()

    def b64(raw: bytes) -> str:
        return base64.b64encode(raw).decode()

    return f"SCRAM-SHA-256${iterations}:{b64(salt)}${b64(stored_key)}:{b64(server_key)}"


def _role() -> tuple[str, str | None]:
    attributes = context.config.attributes
    return attributes.get("handler_role") or DEFAULT_ROLE, attributes.get("handler_password")


def _quoted(conn, value: str, how: str = "ident") -> str:
    return conn.execute(text(f"SELECT quote_{how}(:v)"), {"v": value}).scalar()


def _ensure_role(conn, role: str, password: str | None) -> None:
    ident = _quoted(conn, role)
    exists = conn.execute(text("SELECT 1 FROM pg_roles WHERE rolname = :r"), {"r": role}).first()
    may_create = conn.execute(text(
        "SELECT rolsuper OR rolcreaterole FROM pg_roles WHERE rolname = current_user")).scalar()
    secret = f" PASSWORD {_quoted(conn, scram_verifier(password), 'literal')}" if password else ""
    if exists is None:
        if not may_create:
            me = conn.execute(text("SELECT current_user")).scalar()
            raise RuntimeError(
                f"role {role} does not exist and {me} may not create roles: a database "
                f"administrator must create it first, e.g. CREATE ROLE {ident} LOGIN PASSWORD "
                "'...' (see the README, Tenant isolation)")
        # Roles belong to the whole cluster: another database's migration may be creating it.
        op.execute(f"""
            DO $$
            BEGIN
                CREATE ROLE {ident} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION
                    NOBYPASSRLS NOINHERIT{secret};
            EXCEPTION WHEN duplicate_object OR unique_violation THEN
                NULL;
            END
            $$""")
    elif secret and may_create:
        # Keep it in step with JOBQ_HANDLER_DATABASE_URL (docker-compose re-migrates on start).
        op.execute(f"""
            DO $$
            BEGIN
                ALTER ROLE {ident}{secret};
            EXCEPTION WHEN internal_error THEN
                NULL;  -- another database's migration is setting it at this very moment
            WHEN insufficient_privilege THEN
                RAISE NOTICE 'could not set the password of %: %', {_quoted(conn, role, 'literal')}, SQLERRM;
            END
            $$""")
    problems = [r[0] for r in conn.execute(ROLE_PROBLEMS, {"role": role})]
    if problems:
        raise RuntimeError(f"role {role} cannot run handlers: it {'; it '.join(problems)}. "
                           "Handlers need a role that row-level security binds")
    # Roles belong to the whole cluster: migrations of two databases at once (test runs, several
    # deployments on one server) would both alter it ("tuple concurrently updated"); the first
    # one's setting is the same, so the second leaves it.
    op.execute(f"""
        DO $$
        BEGIN
            IF NOT EXISTS (SELECT 1 FROM pg_db_role_setting s
                            WHERE s.setrole = {_quoted(conn, role, 'literal')}::regrole
                              AND s.setdatabase = 0
                              AND 'track_activities=off' = ANY (s.setconfig)) THEN
                ALTER ROLE {ident} SET track_activities = off;
            END IF;
        EXCEPTION WHEN internal_error THEN
            NULL;  -- altered by another database's migration at this very moment
        WHEN insufficient_privilege THEN
            RAISE NOTICE 'only a superuser can keep the statements of % private: ALTER ROLE % SET track_activities = off',
                {_quoted(conn, role, 'literal')}, {_quoted(conn, role, 'literal')};
        END
        $$""")


def _previous():
    """Revision 0003's module: its downgrade takes its policies away, its upgrade puts them back."""
    return context.script.get_revision("0003").module


def upgrade() -> None:
    conn = op.get_bind()
    role, password = _role()
    schema = _schema(conn)
    _previous().downgrade()  # jobq_tenant's policies and grants go; its role stays unused
    _ensure_role(conn, role, password)
    ident = _quoted(conn, role)

    op.drop_constraint(op.f('ck_tenants_status'), 'tenants', type_='check')
    op.create_check_constraint(op.f('ck_tenants_status'), 'tenants',
                               "status IN ('active', 'suspended', 'deleted')")
    op.create_table('tenant_events',
    sa.Column('id', sa.BigInteger(), autoincrement=True, nullable=False),
    sa.Column('tenant_id', sa.UUID(), nullable=False),
    sa.Column('kind', sa.Text(), nullable=False),
    sa.Column('was', sa.Text(), nullable=False),
    sa.Column('by', sa.Text(), nullable=True),
    sa.Column('detail', postgresql.JSONB(astext_type=sa.Text()), nullable=True),
    sa.Column('at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.ForeignKeyConstraint(['tenant_id'], ['tenants.id'], name=op.f('fk_tenant_events_tenant_id_tenants'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_tenant_events'))
    )
    op.create_index('ix_tenant_events_tenant_at', 'tenant_events', ['tenant_id', 'at'], unique=False)
    op.create_table('jobq_bindings',
    sa.Column('pid', sa.Integer(), autoincrement=False, nullable=False),
    sa.Column('xid', sa.BigInteger(), nullable=False),
    sa.Column('bound_tenant', sa.UUID(), nullable=False),
    sa.Column('job_id', sa.UUID(), nullable=False),
    sa.PrimaryKeyConstraint('pid', name=op.f('pk_jobq_bindings')),
    prefixes=['UNLOGGED'],
    )
    op.execute("REVOKE ALL ON jobq_bindings FROM PUBLIC")
    for function in _functions(schema):
        op.execute(function)
    for signature in ("jobq_current_tenant()", "jobq_bind(uuid, text)"):
        op.execute(f"REVOKE ALL ON FUNCTION {schema}.{signature} FROM PUBLIC")
        op.execute(f"GRANT EXECUTE ON FUNCTION {schema}.{signature} TO {ident}")

    op.execute(f"GRANT CONNECT ON DATABASE {_quoted(conn, _database(conn))} TO {ident}")
    op.execute(f"GRANT USAGE ON SCHEMA {schema} TO {ident}")
    _keep_schema_closed(conn, role, schema)
    granted = []
    for table, owner in conn.execute(TENANT_TABLES).all():
        op.execute(f'ALTER TABLE "{table}" ENABLE ROW LEVEL SECURITY')
        op.execute(f'ALTER TABLE "{table}" FORCE ROW LEVEL SECURITY')
        op.execute(f'CREATE POLICY {ENGINE_POLICY} ON "{table}" TO {owner} '
                   "USING (true) WITH CHECK (true)")
        if table in ENGINE_ONLY:
            continue
        rule = _policy(table)
        op.execute(f'CREATE POLICY {TENANT_POLICY} ON "{table}" TO {ident} '
                   f"USING ({rule}) WITH CHECK ({rule})")
        op.execute(f'GRANT {PRIVILEGES.get(table, DEFAULT_PRIVILEGES)} ON "{table}" TO {ident}')
        granted.append(table)
    for sequence in [r[0] for r in conn.execute(OWNED_SEQUENCES, {"tables": granted})]:
        op.execute(f'GRANT USAGE, SELECT ON SEQUENCE "{sequence}" TO {ident}')


def downgrade() -> None:
    conn = op.get_bind()
    schema = _schema(conn)
    roles = {r[0] for r in conn.execute(text(
        "SELECT DISTINCT quote_ident(r) FROM pg_policies, unnest(roles) r "
        "WHERE schemaname = current_schema() AND policyname = :p"), {"p": TENANT_POLICY})}
    tables = [r[0] for r in conn.execute(text(
        "SELECT DISTINCT tablename FROM pg_policies WHERE schemaname = current_schema() "
        "AND policyname IN (:t, :e) ORDER BY tablename"), {"t": TENANT_POLICY, "e": ENGINE_POLICY})]
    for table in tables:
        op.execute(f'DROP POLICY IF EXISTS {TENANT_POLICY} ON "{table}"')
        op.execute(f'DROP POLICY IF EXISTS {ENGINE_POLICY} ON "{table}"')
        op.execute(f'ALTER TABLE "{table}" NO FORCE ROW LEVEL SECURITY')
        op.execute(f'ALTER TABLE "{table}" DISABLE ROW LEVEL SECURITY')
    for ident in roles:
        for sequence in [r[0] for r in conn.execute(OWNED_SEQUENCES, {"tables": tables})]:
            op.execute(f'REVOKE ALL ON SEQUENCE "{sequence}" FROM {ident}')
        for table in tables:
            op.execute(f'REVOKE ALL ON "{table}" FROM {ident}')
        op.execute(f"REVOKE USAGE ON SCHEMA {schema} FROM {ident}")
        op.execute(f"REVOKE CONNECT ON DATABASE {_quoted(conn, _database(conn))} FROM {ident}")
    op.execute(f"DROP FUNCTION IF EXISTS {schema}.jobq_bind(uuid, text)")
    op.execute(f"DROP FUNCTION IF EXISTS {schema}.jobq_current_tenant()")
    op.drop_table('jobq_bindings')
    op.drop_index('ix_tenant_events_tenant_at', table_name='tenant_events')
    op.drop_table('tenant_events')
    # 0003 knows no deleted tenants: they become suspended, which refuses their work too.
    op.execute("UPDATE tenants SET status = 'suspended' WHERE status = 'deleted'")
    op.drop_constraint(op.f('ck_tenants_status'), 'tenants', type_='check')
    op.create_check_constraint(op.f('ck_tenants_status'), 'tenants',
                               "status IN ('active', 'suspended')")
    _previous().upgrade()
    # The handler role stays: it belongs to the cluster, and other databases may use it.


def _policy(table: str) -> str:
    if table == "tenants":
        return f"id = {CURRENT_TENANT}"
    if table == "job_events":  # no tenant_id of its own: it is the tenant's when its job is
        return "EXISTS (SELECT 1 FROM job_executions j WHERE j.id = job_events.job_id)"
    return f"tenant_id = {CURRENT_TENANT}"


def _keep_schema_closed(conn, role: str, schema: str) -> None:
    """Handlers must not create objects beside the engine's (PostgreSQL before 15 lets PUBLIC
    create in the public schema): take that from PUBLIC, as PostgreSQL 15 does."""
    if conn.execute(text("SELECT has_schema_privilege(:r, current_schema(), 'CREATE')"),
                    {"r": role}).scalar():
        op.execute(f"REVOKE CREATE ON SCHEMA {schema} FROM PUBLIC")
    if conn.execute(text("SELECT has_schema_privilege(:r, current_schema(), 'CREATE')"),
                    {"r": role}).scalar():
        raise RuntimeError(f"role {role} may create objects in schema {schema}: handlers must "
                           f"not (REVOKE CREATE ON SCHEMA {schema} FROM {role})")


def _schema(conn) -> str:
    return conn.execute(text("SELECT quote_ident(current_schema())")).scalar()


def _database(conn) -> str:
    return conn.execute(text("SELECT current_database()")).scalar()
