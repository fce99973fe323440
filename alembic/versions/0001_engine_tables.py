"""Engine tables: tenants, job_executions (the original columns unchanged), job_events,
job_schedules and their runs (with the default schedules), and the trigger that records
every new job's first event.

Revision ID: 0001
Revises:
Create Date: 2026-11-26 06:57:04
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = '0001'
down_revision = None
branch_labels = None
depends_on = None

CREATED_EVENT_FUNCTION = """
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

# The periodic work every installation has (app.schedules.DEFAULT_SCHEDULES, which
# tests/test_schedules.py holds equal to this). Written once with the schema: an operator who
# removes one keeps it removed; `jobq schedules defaults` brings them back.
DEFAULT_SCHEDULES = """
INSERT INTO job_schedules (name, intent_key, cron, timezone, description) VALUES
    ('monthly-settlement', 'billing.exec.monthly_settlement', '0 2 1 * *', 'Asia/Seoul',
     'Monthly settlement of every active academy: the 1st of the month, 02:00'),
    ('weekly-attendance-report', 'report.exec.weekly_attendance', '0 7 * * 1', 'Asia/Seoul',
     'Weekly attendance report of every active academy: Mondays, 07:00')
ON CONFLICT (name) DO NOTHING
"""


def upgrade() -> None:
    op.create_table('tenants',
    sa.Column('id', sa.UUID(), server_default=sa.text('gen_random_uuid()'), nullable=False),
    sa.Column('name', sa.Text(), nullable=False),
    sa.Column('status', sa.Text(), server_default='active', nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.CheckConstraint("status IN ('active', 'suspended')", name=op.f('ck_tenants_status')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_tenants'))
    )
    op.create_table('job_executions',
    sa.Column('id', sa.UUID(), server_default=sa.text('gen_random_uuid()'), nullable=False),
    sa.Column('tenant_id', sa.UUID(), nullable=False),
    sa.Column('intent_key', sa.Text(), nullable=False),
    sa.Column('intent_params', postgresql.JSONB(astext_type=sa.Text()), nullable=True),
    sa.Column('status', sa.Text(), server_default='pending', nullable=True),
    sa.Column('retry_count', sa.Integer(), server_default='0', nullable=True),
    sa.Column('max_retries', sa.Integer(), server_default='3', nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=True),
    sa.Column('executed_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('completed_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('error_message', sa.Text(), nullable=True),
    sa.Column('run_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('published_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('idempotency_key', sa.Text(), nullable=True),
    sa.Column('queue', sa.Text(), nullable=True),
    sa.Column('result', postgresql.JSONB(astext_type=sa.Text()), nullable=True),
    sa.Column('progress', postgresql.JSONB(astext_type=sa.Text()), nullable=True),
    sa.Column('checkpoint', postgresql.JSONB(astext_type=sa.Text()), nullable=True),
    sa.Column('worker', sa.Text(), nullable=True),
    sa.Column('lease_owner', sa.Text(), nullable=True),
    sa.Column('lease_expires_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('source', sa.Text(), server_default='sql', nullable=False),
    sa.Column('parent_id', sa.UUID(), nullable=True),
    sa.Column('updated_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.CheckConstraint("status IN ('pending', 'processing', 'completed', 'failed', 'cancelled')", name=op.f('ck_job_executions_status')),
    sa.ForeignKeyConstraint(['parent_id'], ['job_executions.id'], name=op.f('fk_job_executions_parent_id_job_executions'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['tenant_id'], ['tenants.id'], name=op.f('fk_job_executions_tenant_id_tenants')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_job_executions'))
    )
    op.create_index('ix_job_executions_created', 'job_executions', [sa.literal_column('created_at DESC')], unique=False)
    op.create_index('ix_job_executions_due', 'job_executions', [sa.literal_column('coalesce(run_at, created_at)')], unique=False, postgresql_where=sa.text("status = 'pending'"))
    op.create_index('ix_job_executions_finished', 'job_executions', ['completed_at'], unique=False, postgresql_where=sa.text("status IN ('completed', 'failed', 'cancelled')"))
    op.create_index('ix_job_executions_intent_created', 'job_executions', ['intent_key', sa.literal_column('created_at DESC')], unique=False)
    op.create_index('ix_job_executions_lease', 'job_executions', ['lease_expires_at'], unique=False, postgresql_where=sa.text("status = 'processing'"))
    op.create_index('ix_job_executions_parent', 'job_executions', ['parent_id'], unique=False, postgresql_where=sa.text('parent_id IS NOT NULL'))
    op.create_index('ix_job_executions_status_created', 'job_executions', ['status', sa.literal_column('created_at DESC')], unique=False)
    op.create_index('ix_job_executions_tenant_created', 'job_executions', ['tenant_id', sa.literal_column('created_at DESC')], unique=False)
    op.create_index('uq_job_executions_idempotency', 'job_executions', ['tenant_id', 'intent_key', 'idempotency_key'], unique=True, postgresql_where=sa.text('idempotency_key IS NOT NULL'))
    op.create_table('job_schedules',
    sa.Column('id', sa.UUID(), server_default=sa.text('gen_random_uuid()'), nullable=False),
    sa.Column('name', sa.Text(), nullable=False),
    sa.Column('tenant_id', sa.UUID(), nullable=True),
    sa.Column('intent_key', sa.Text(), nullable=False),
    sa.Column('intent_params', postgresql.JSONB(astext_type=sa.Text()), server_default=sa.text("'{}'::jsonb"), nullable=False),
    sa.Column('cron', sa.Text(), nullable=False),
    sa.Column('timezone', sa.Text(), server_default='Asia/Seoul', nullable=False),
    sa.Column('enabled', sa.Boolean(), server_default=sa.text('true'), nullable=False),
    sa.Column('description', sa.Text(), nullable=True),
    sa.Column('slots_done_until', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.ForeignKeyConstraint(['tenant_id'], ['tenants.id'], name=op.f('fk_job_schedules_tenant_id_tenants'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_job_schedules')),
    sa.UniqueConstraint('name', name=op.f('uq_job_schedules_name'))
    )
    op.create_index('ix_job_schedules_enabled', 'job_schedules', ['enabled'], unique=False)
    op.create_table('job_schedule_runs',
    sa.Column('id', sa.BigInteger(), autoincrement=True, nullable=False),
    sa.Column('schedule_id', sa.UUID(), nullable=False),
    sa.Column('slot_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('status', sa.Text(), nullable=False),
    sa.Column('jobs', sa.Integer(), server_default='0', nullable=False),
    sa.Column('error', sa.Text(), nullable=True),
    sa.Column('at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.CheckConstraint("status IN ('fired', 'skipped', 'refused')", name=op.f('ck_job_schedule_runs_status')),
    sa.ForeignKeyConstraint(['schedule_id'], ['job_schedules.id'], name=op.f('fk_job_schedule_runs_schedule_id_job_schedules'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_job_schedule_runs')),
    sa.UniqueConstraint('schedule_id', 'slot_at', name=op.f('uq_job_schedule_runs_schedule_id_slot_at'))
    )
    op.create_index('ix_job_schedule_runs_at', 'job_schedule_runs', ['at'], unique=False)
    op.create_table('job_events',
    sa.Column('id', sa.BigInteger(), autoincrement=True, nullable=False),
    sa.Column('job_id', sa.UUID(), nullable=False),
    sa.Column('attempt', sa.Integer(), server_default='0', nullable=False),
    sa.Column('kind', sa.Text(), nullable=False),
    sa.Column('at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('worker', sa.Text(), nullable=True),
    sa.Column('error', sa.Text(), nullable=True),
    sa.Column('traceback', sa.Text(), nullable=True),
    sa.Column('detail', postgresql.JSONB(astext_type=sa.Text()), nullable=True),
    sa.ForeignKeyConstraint(['job_id'], ['job_executions.id'], name=op.f('fk_job_events_job_id_job_executions'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_job_events'))
    )
    op.create_index('ix_job_events_job_at', 'job_events', ['job_id', 'at'], unique=False)
    # Every new row gets its first event, however it was written: through the engine or by a
    # plain INSERT from outside. Statement-level, so a bulk insert costs one extra statement.
    op.execute(CREATED_EVENT_FUNCTION)
    op.execute(
        "CREATE TRIGGER job_executions_created AFTER INSERT ON job_executions "
        "REFERENCING NEW TABLE AS new_jobs FOR EACH STATEMENT "
        "EXECUTE FUNCTION jobq_record_created()"
    )
    op.execute(DEFAULT_SCHEDULES)


def downgrade() -> None:
    op.execute("DROP TRIGGER IF EXISTS job_executions_created ON job_executions")
    op.execute("DROP FUNCTION IF EXISTS jobq_record_created()")
    op.drop_index('ix_job_events_job_at', table_name='job_events')
    op.drop_table('job_events')
    op.drop_index('ix_job_schedule_runs_at', table_name='job_schedule_runs')
    op.drop_table('job_schedule_runs')
    op.drop_index('ix_job_schedules_enabled', table_name='job_schedules')
    op.drop_table('job_schedules')
    op.drop_index('uq_job_executions_idempotency', table_name='job_executions', postgresql_where=sa.text('idempotency_key IS NOT NULL'))
    op.drop_index('ix_job_executions_tenant_created', table_name='job_executions')
    op.drop_index('ix_job_executions_status_created', table_name='job_executions')
    op.drop_index('ix_job_executions_parent', table_name='job_executions', postgresql_where=sa.text('parent_id IS NOT NULL'))
    op.drop_index('ix_job_executions_lease', table_name='job_executions', postgresql_where=sa.text("status = 'processing'"))
    op.drop_index('ix_job_executions_intent_created', table_name='job_executions')
    op.drop_index('ix_job_executions_finished', table_name='job_executions', postgresql_where=sa.text("status IN ('completed', 'failed', 'cancelled')"))
    op.drop_index('ix_job_executions_due', table_name='job_executions', postgresql_where=sa.text("status = 'pending'"))
    op.drop_index('ix_job_executions_created', table_name='job_executions')
    op.drop_table('job_executions')
    op.drop_table('tenants')
