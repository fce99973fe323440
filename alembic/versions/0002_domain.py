"""Academy domain tables (handlers/models.py): students, guardians and their link, terms,
classes and timetables, enrolments, sessions, attendance, invoices, payments, broadcasts,
notifications, reports, roster imports and their bad rows.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26 07:04:12
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('guardians',
    sa.Column('id', sa.UUID(), server_default=sa.text('gen_random_uuid()'), nullable=False),
    sa.Column('tenant_id', sa.UUID(), nullable=False),
    sa.Column('name', sa.Text(), nullable=False),
    sa.Column('phone', sa.Text(), nullable=True),
    sa.Column('email', sa.Text(), nullable=True),
    sa.Column('kakao_id', sa.Text(), nullable=True),
    sa.Column('preferred_channel', sa.Text(), server_default='kakao', nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.CheckConstraint("preferred_channel IN ('kakao', 'sms', 'email')", name=op.f('ck_guardians_preferred_channel')),
    sa.ForeignKeyConstraint(['tenant_id'], ['tenants.id'], name=op.f('fk_guardians_tenant_id_tenants'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_guardians'))
    )
    op.create_index('uq_guardians_tenant_id_phone', 'guardians', ['tenant_id', 'phone'], unique=True, postgresql_where=sa.text('phone IS NOT NULL'))
    op.create_table('reports',
    sa.Column('id', sa.UUID(), server_default=sa.text('gen_random_uuid()'), nullable=False),
    sa.Column('tenant_id', sa.UUID(), nullable=False),
    sa.Column('kind', sa.Text(), nullable=False),
    sa.Column('period_start', sa.Date(), nullable=False),
    sa.Column('period_end', sa.Date(), nullable=False),
    sa.Column('scope', sa.Text(), server_default='', nullable=False),
    sa.Column('file_path', sa.Text(), nullable=True),
    sa.Column('summary', postgresql.JSONB(astext_type=sa.Text()), server_default=sa.text("'{}'::jsonb"), nullable=False),
    sa.Column('job_id', sa.UUID(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.ForeignKeyConstraint(['tenant_id'], ['tenants.id'], name=op.f('fk_reports_tenant_id_tenants'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_reports')),
    sa.UniqueConstraint('tenant_id', 'kind', 'period_start', 'period_end', 'scope', name=op.f('uq_reports_tenant_id_kind_period_start_period_end_scope'))
    )
    op.create_index('ix_reports_tenant_id_created_at', 'reports', ['tenant_id', 'created_at'], unique=False)
    op.create_table('roster_imports',
    sa.Column('id', sa.UUID(), server_default=sa.text('gen_random_uuid()'), nullable=False),
    sa.Column('tenant_id', sa.UUID(), nullable=False),
    sa.Column('job_id', sa.UUID(), nullable=False),
    sa.Column('source', sa.Text(), nullable=False),
    sa.Column('status', sa.Text(), server_default='running', nullable=False),
    sa.Column('rows_total', sa.Integer(), server_default='0', nullable=False),
    sa.Column('rows_imported', sa.Integer(), server_default='0', nullable=False),
    sa.Column('rows_unchanged', sa.Integer(), server_default='0', nullable=False),
    sa.Column('rows_bad', sa.Integer(), server_default='0', nullable=False),
    sa.Column('started_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('finished_at', sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['tenant_id'], ['tenants.id'], name=op.f('fk_roster_imports_tenant_id_tenants'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_roster_imports')),
    sa.UniqueConstraint('job_id', name=op.f('uq_roster_imports_job_id'))
    )
    op.create_index('ix_roster_imports_tenant_id_started_at', 'roster_imports', ['tenant_id', 'started_at'], unique=False)
    op.create_table('students',
    sa.Column('id', sa.UUID(), server_default=sa.text('gen_random_uuid()'), nullable=False),
    sa.Column('tenant_id', sa.UUID(), nullable=False),
    sa.Column('name', sa.Text(), nullable=False),
    sa.Column('external_ref', sa.Text(), nullable=True),
    sa.Column('birth_date', sa.Date(), nullable=True),
    sa.Column('school', sa.Text(), nullable=True),
    sa.Column('grade', sa.SmallInteger(), nullable=True),
    sa.Column('phone', sa.Text(), nullable=True),
    sa.Column('email', sa.Text(), nullable=True),
    sa.Column('status', sa.Text(), server_default='active', nullable=False),
    sa.Column('merged_into_id', sa.UUID(), nullable=True),
    sa.Column('joined_on', sa.Date(), nullable=True),
    sa.Column('left_on', sa.Date(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.CheckConstraint("status IN ('active', 'inactive', 'graduated', 'merged')", name=op.f('ck_students_status')),
    sa.CheckConstraint('grade BETWEEN 1 AND 12', name=op.f('ck_students_grade')),
    sa.ForeignKeyConstraint(['merged_into_id'], ['students.id'], name=op.f('fk_students_merged_into_id_students'), ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['tenant_id'], ['tenants.id'], name=op.f('fk_students_tenant_id_tenants'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_students'))
    )
    op.create_index('ix_students_tenant_id_name', 'students', ['tenant_id', 'name'], unique=False)
    op.create_index('ix_students_tenant_id_status', 'students', ['tenant_id', 'status'], unique=False)
    op.create_index('uq_students_tenant_id_external_ref', 'students', ['tenant_id', 'external_ref'], unique=True, postgresql_where=sa.text('external_ref IS NOT NULL'))
    op.create_table('terms',
    sa.Column('id', sa.UUID(), server_default=sa.text('gen_random_uuid()'), nullable=False),
    sa.Column('tenant_id', sa.UUID(), nullable=False),
    sa.Column('name', sa.Text(), nullable=False),
    sa.Column('starts_on', sa.Date(), nullable=False),
    sa.Column('ends_on', sa.Date(), nullable=False),
    sa.Column('status', sa.Text(), server_default='active', nullable=False),
    sa.Column('closed_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.CheckConstraint("status IN ('planned', 'active', 'closed')", name=op.f('ck_terms_status')),
    sa.CheckConstraint('ends_on >= starts_on', name=op.f('ck_terms_period')),
    sa.ForeignKeyConstraint(['tenant_id'], ['tenants.id'], name=op.f('fk_terms_tenant_id_tenants'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_terms')),
    sa.UniqueConstraint('tenant_id', 'name', name=op.f('uq_terms_tenant_id_name'))
    )
    op.create_table('classes',
    sa.Column('id', sa.UUID(), server_default=sa.text('gen_random_uuid()'), nullable=False),
    sa.Column('tenant_id', sa.UUID(), nullable=False),
    sa.Column('term_id', sa.UUID(), nullable=True),
    sa.Column('name', sa.Text(), nullable=False),
    sa.Column('subject', sa.Text(), nullable=True),
    sa.Column('teacher', sa.Text(), nullable=True),
    sa.Column('room', sa.Text(), nullable=True),
    sa.Column('capacity', sa.Integer(), nullable=True),
    sa.Column('monthly_fee', sa.Integer(), server_default='0', nullable=False),
    sa.Column('status', sa.Text(), server_default='active', nullable=False),
    sa.Column('archived_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.CheckConstraint("status IN ('active', 'archived')", name=op.f('ck_classes_status')),
    sa.CheckConstraint('monthly_fee >= 0', name=op.f('ck_classes_monthly_fee')),
    sa.ForeignKeyConstraint(['tenant_id'], ['tenants.id'], name=op.f('fk_classes_tenant_id_tenants'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['term_id'], ['terms.id'], name=op.f('fk_classes_term_id_terms'), ondelete='SET NULL'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_classes')),
    sa.UniqueConstraint('tenant_id', 'name', name=op.f('uq_classes_tenant_id_name'))
    )
    op.create_index('ix_classes_tenant_id_status', 'classes', ['tenant_id', 'status'], unique=False)
    op.create_table('roster_import_errors',
    sa.Column('id', sa.BigInteger(), autoincrement=True, nullable=False),
    sa.Column('tenant_id', sa.UUID(), nullable=False),
    sa.Column('import_id', sa.UUID(), nullable=False),
    sa.Column('line_number', sa.Integer(), nullable=False),
    sa.Column('reason', sa.Text(), nullable=False),
    sa.Column('raw', sa.Text(), nullable=True),
    sa.ForeignKeyConstraint(['import_id'], ['roster_imports.id'], name=op.f('fk_roster_import_errors_import_id_roster_imports'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['tenant_id'], ['tenants.id'], name=op.f('fk_roster_import_errors_tenant_id_tenants'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_roster_import_errors')),
    sa.UniqueConstraint('import_id', 'line_number', name=op.f('uq_roster_import_errors_import_id_line_number'))
    )
    op.create_table('student_guardians',
    sa.Column('student_id', sa.UUID(), nullable=False),
    sa.Column('guardian_id', sa.UUID(), nullable=False),
    sa.Column('tenant_id', sa.UUID(), nullable=False),
    sa.Column('relation', sa.Text(), nullable=True),
    sa.Column('is_primary', sa.Boolean(), server_default=sa.text('true'), nullable=False),
    sa.ForeignKeyConstraint(['guardian_id'], ['guardians.id'], name=op.f('fk_student_guardians_guardian_id_guardians'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['student_id'], ['students.id'], name=op.f('fk_student_guardians_student_id_students'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['tenant_id'], ['tenants.id'], name=op.f('fk_student_guardians_tenant_id_tenants'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('student_id', 'guardian_id', name=op.f('pk_student_guardians'))
    )
    op.create_index('ix_student_guardians_guardian_id', 'student_guardians', ['guardian_id'], unique=False)
    op.create_table('broadcasts',
    sa.Column('id', sa.UUID(), server_default=sa.text('gen_random_uuid()'), nullable=False),
    sa.Column('tenant_id', sa.UUID(), nullable=False),
    sa.Column('job_id', sa.UUID(), nullable=False),
    sa.Column('class_id', sa.UUID(), nullable=True),
    sa.Column('title', sa.Text(), nullable=True),
    sa.Column('body', sa.Text(), nullable=False),
    sa.Column('recipients_total', sa.Integer(), server_default='0', nullable=False),
    sa.Column('chunks_total', sa.Integer(), server_default='0', nullable=False),
    sa.Column('status', sa.Text(), server_default='sending', nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('finished_at', sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['class_id'], ['classes.id'], name=op.f('fk_broadcasts_class_id_classes'), ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['tenant_id'], ['tenants.id'], name=op.f('fk_broadcasts_tenant_id_tenants'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_broadcasts')),
    sa.UniqueConstraint('job_id', name=op.f('uq_broadcasts_job_id'))
    )
    op.create_index('ix_broadcasts_tenant_id_created_at', 'broadcasts', ['tenant_id', 'created_at'], unique=False)
    op.create_table('broadcast_chunks',
    sa.Column('broadcast_id', sa.UUID(), nullable=False),
    sa.Column('chunk_no', sa.Integer(), nullable=False),
    sa.Column('tenant_id', sa.UUID(), nullable=False),
    sa.Column('guardian_ids', postgresql.ARRAY(sa.UUID()), nullable=False),
    sa.Column('status', sa.Text(), server_default='pending', nullable=False),
    sa.Column('job_id', sa.UUID(), nullable=True),
    sa.Column('sent_by_job_id', sa.UUID(), nullable=True),
    sa.Column('sent', sa.Integer(), server_default='0', nullable=False),
    sa.Column('already_sent', sa.Integer(), server_default='0', nullable=False),
    sa.Column('failed', sa.Integer(), server_default='0', nullable=False),
    sa.Column('finished_at', sa.DateTime(timezone=True), nullable=True),
    sa.CheckConstraint("status IN ('pending', 'done')", name=op.f('ck_broadcast_chunks_status')),
    sa.ForeignKeyConstraint(['broadcast_id'], ['broadcasts.id'], name=op.f('fk_broadcast_chunks_broadcast_id_broadcasts'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['tenant_id'], ['tenants.id'], name=op.f('fk_broadcast_chunks_tenant_id_tenants'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('broadcast_id', 'chunk_no', name=op.f('pk_broadcast_chunks'))
    )
    op.create_table('class_sessions',
    sa.Column('id', sa.UUID(), server_default=sa.text('gen_random_uuid()'), nullable=False),
    sa.Column('tenant_id', sa.UUID(), nullable=False),
    sa.Column('class_id', sa.UUID(), nullable=False),
    sa.Column('term_id', sa.UUID(), nullable=True),
    sa.Column('starts_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('ends_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('room', sa.Text(), nullable=True),
    sa.Column('status', sa.Text(), server_default='scheduled', nullable=False),
    sa.Column('attendance_closed_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('note', sa.Text(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.CheckConstraint("status IN ('scheduled', 'held', 'cancelled')", name=op.f('ck_class_sessions_status')),
    sa.CheckConstraint('ends_at > starts_at', name=op.f('ck_class_sessions_times')),
    sa.ForeignKeyConstraint(['class_id'], ['classes.id'], name=op.f('fk_class_sessions_class_id_classes'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['tenant_id'], ['tenants.id'], name=op.f('fk_class_sessions_tenant_id_tenants'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['term_id'], ['terms.id'], name=op.f('fk_class_sessions_term_id_terms'), ondelete='SET NULL'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_class_sessions')),
    sa.UniqueConstraint('class_id', 'starts_at', name=op.f('uq_class_sessions_class_id_starts_at'))
    )
    op.create_index('ix_class_sessions_tenant_id_starts_at', 'class_sessions', ['tenant_id', 'starts_at'], unique=False)
    op.create_index('ix_class_sessions_term_id', 'class_sessions', ['term_id'], unique=False)
    op.create_table('enrolments',
    sa.Column('id', sa.UUID(), server_default=sa.text('gen_random_uuid()'), nullable=False),
    sa.Column('tenant_id', sa.UUID(), nullable=False),
    sa.Column('student_id', sa.UUID(), nullable=False),
    sa.Column('class_id', sa.UUID(), nullable=False),
    sa.Column('status', sa.Text(), server_default='active', nullable=False),
    sa.Column('started_on', sa.Date(), server_default=sa.text('CURRENT_DATE'), nullable=False),
    sa.Column('ended_on', sa.Date(), nullable=True),
    sa.Column('monthly_fee', sa.Integer(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.CheckConstraint("status IN ('active', 'ended', 'transferred')", name=op.f('ck_enrolments_status')),
    sa.ForeignKeyConstraint(['class_id'], ['classes.id'], name=op.f('fk_enrolments_class_id_classes'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['student_id'], ['students.id'], name=op.f('fk_enrolments_student_id_students'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['tenant_id'], ['tenants.id'], name=op.f('fk_enrolments_tenant_id_tenants'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_enrolments'))
    )
    op.create_index('ix_enrolments_class_id_status', 'enrolments', ['class_id', 'status'], unique=False)
    op.create_index('ix_enrolments_student_id', 'enrolments', ['student_id'], unique=False)
    op.create_index('ix_enrolments_tenant_id_status', 'enrolments', ['tenant_id', 'status'], unique=False)
    op.create_index('uq_enrolments_student_id_class_id_active', 'enrolments', ['student_id', 'class_id'], unique=True, postgresql_where=sa.text("status = 'active'"))
    op.create_table('timetable_slots',
    sa.Column('id', sa.UUID(), server_default=sa.text('gen_random_uuid()'), nullable=False),
    sa.Column('tenant_id', sa.UUID(), nullable=False),
    sa.Column('class_id', sa.UUID(), nullable=False),
    sa.Column('weekday', sa.SmallInteger(), nullable=False),
    sa.Column('starts_at', sa.Time(), nullable=False),
    sa.Column('ends_at', sa.Time(), nullable=False),
    sa.Column('room', sa.Text(), nullable=True),
    sa.CheckConstraint('ends_at > starts_at', name=op.f('ck_timetable_slots_times')),
    sa.CheckConstraint('weekday BETWEEN 0 AND 6', name=op.f('ck_timetable_slots_weekday')),
    sa.ForeignKeyConstraint(['class_id'], ['classes.id'], name=op.f('fk_timetable_slots_class_id_classes'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['tenant_id'], ['tenants.id'], name=op.f('fk_timetable_slots_tenant_id_tenants'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_timetable_slots')),
    sa.UniqueConstraint('class_id', 'weekday', 'starts_at', name=op.f('uq_timetable_slots_class_id_weekday_starts_at'))
    )
    op.create_table('attendance_records',
    sa.Column('id', sa.UUID(), server_default=sa.text('gen_random_uuid()'), nullable=False),
    sa.Column('tenant_id', sa.UUID(), nullable=False),
    sa.Column('session_id', sa.UUID(), nullable=False),
    sa.Column('student_id', sa.UUID(), nullable=False),
    sa.Column('status', sa.Text(), nullable=False),
    sa.Column('checked_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('source', sa.Text(), server_default='staff', nullable=False),
    sa.Column('note', sa.Text(), nullable=True),
    sa.CheckConstraint("status IN ('present', 'late', 'absent', 'excused')", name=op.f('ck_attendance_records_status')),
    sa.ForeignKeyConstraint(['session_id'], ['class_sessions.id'], name=op.f('fk_attendance_records_session_id_class_sessions'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['student_id'], ['students.id'], name=op.f('fk_attendance_records_student_id_students'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['tenant_id'], ['tenants.id'], name=op.f('fk_attendance_records_tenant_id_tenants'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_attendance_records')),
    sa.UniqueConstraint('session_id', 'student_id', name=op.f('uq_attendance_records_session_id_student_id'))
    )
    op.create_index('ix_attendance_records_student_id_checked_at', 'attendance_records', ['student_id', 'checked_at'], unique=False)
    op.create_table('invoices',
    sa.Column('id', sa.UUID(), server_default=sa.text('gen_random_uuid()'), nullable=False),
    sa.Column('tenant_id', sa.UUID(), nullable=False),
    sa.Column('enrolment_id', sa.UUID(), nullable=False),
    sa.Column('student_id', sa.UUID(), nullable=False),
    sa.Column('class_id', sa.UUID(), nullable=False),
    sa.Column('month', sa.Date(), nullable=False),
    sa.Column('amount', sa.Integer(), nullable=False),
    sa.Column('late_fee', sa.Integer(), server_default='0', nullable=False),
    sa.Column('late_fee_applied_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('due_on', sa.Date(), nullable=False),
    sa.Column('status', sa.Text(), server_default='open', nullable=False),
    sa.Column('paid_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('gateway_ref', sa.Text(), nullable=True),
    sa.Column('reminders_sent', sa.Integer(), server_default='0', nullable=False),
    sa.Column('last_reminded_on', sa.Date(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.CheckConstraint("status IN ('open', 'paid', 'void')", name=op.f('ck_invoices_status')),
    sa.CheckConstraint('amount >= 0 AND late_fee >= 0', name=op.f('ck_invoices_amounts')),
    sa.CheckConstraint('extract(day FROM month) = 1', name=op.f('ck_invoices_month_first_day')),
    sa.ForeignKeyConstraint(['class_id'], ['classes.id'], name=op.f('fk_invoices_class_id_classes'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['enrolment_id'], ['enrolments.id'], name=op.f('fk_invoices_enrolment_id_enrolments'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['student_id'], ['students.id'], name=op.f('fk_invoices_student_id_students'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['tenant_id'], ['tenants.id'], name=op.f('fk_invoices_tenant_id_tenants'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_invoices')),
    sa.UniqueConstraint('enrolment_id', 'month', name=op.f('uq_invoices_enrolment_id_month'))
    )
    op.create_index('ix_invoices_student_id', 'invoices', ['student_id'], unique=False)
    op.create_index('ix_invoices_tenant_id_month', 'invoices', ['tenant_id', 'month'], unique=False)
    op.create_index('ix_invoices_tenant_id_status_due_on', 'invoices', ['tenant_id', 'status', 'due_on'], unique=False)
    op.create_table('notifications',
    sa.Column('id', sa.UUID(), server_default=sa.text('gen_random_uuid()'), nullable=False),
    sa.Column('tenant_id', sa.UUID(), nullable=False),
    sa.Column('job_id', sa.UUID(), nullable=False),
    sa.Column('recipient', sa.Text(), nullable=False),
    sa.Column('channel', sa.Text(), nullable=False),
    sa.Column('transport', sa.Text(), nullable=False),
    sa.Column('guardian_id', sa.UUID(), nullable=True),
    sa.Column('student_id', sa.UUID(), nullable=True),
    sa.Column('broadcast_id', sa.UUID(), nullable=True),
    sa.Column('address', sa.Text(), nullable=True),
    sa.Column('template', sa.Text(), nullable=False),
    sa.Column('subject', sa.Text(), nullable=True),
    sa.Column('body', sa.Text(), nullable=False),
    sa.Column('status', sa.Text(), server_default='pending', nullable=False),
    sa.Column('attempts', sa.Integer(), server_default='0', nullable=False),
    sa.Column('provider_message_id', sa.Text(), nullable=True),
    sa.Column('last_error', sa.Text(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('sent_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('updated_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.CheckConstraint("status IN ('pending', 'sent', 'failed')", name=op.f('ck_notifications_status')),
    sa.ForeignKeyConstraint(['tenant_id'], ['tenants.id'], name=op.f('fk_notifications_tenant_id_tenants'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_notifications')),
    sa.UniqueConstraint('job_id', 'recipient', 'channel', name=op.f('uq_notifications_job_id_recipient_channel'))
    )
    op.create_index('ix_notifications_broadcast_id', 'notifications', ['broadcast_id'], unique=False, postgresql_where=sa.text('broadcast_id IS NOT NULL'))
    op.create_index('ix_notifications_guardian_id', 'notifications', ['guardian_id'], unique=False)
    op.create_index('ix_notifications_tenant_id_created_at', 'notifications', ['tenant_id', 'created_at'], unique=False)
    op.create_index('ix_notifications_tenant_id_status_created_at', 'notifications', ['tenant_id', 'status', 'created_at'], unique=False)
    op.create_table('payments',
    sa.Column('id', sa.UUID(), server_default=sa.text('gen_random_uuid()'), nullable=False),
    sa.Column('tenant_id', sa.UUID(), nullable=False),
    sa.Column('invoice_id', sa.UUID(), nullable=False),
    sa.Column('amount', sa.Integer(), nullable=False),
    sa.Column('paid_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('method', sa.Text(), nullable=True),
    sa.Column('source', sa.Text(), server_default='manual', nullable=False),
    sa.Column('provider_payment_id', sa.Text(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.CheckConstraint('amount > 0', name=op.f('ck_payments_amount')),
    sa.ForeignKeyConstraint(['invoice_id'], ['invoices.id'], name=op.f('fk_payments_invoice_id_invoices'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['tenant_id'], ['tenants.id'], name=op.f('fk_payments_tenant_id_tenants'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_payments')),
    sa.UniqueConstraint('tenant_id', 'provider_payment_id', name=op.f('uq_payments_tenant_id_provider_payment_id'))
    )
    op.create_index('ix_payments_invoice_id', 'payments', ['invoice_id'], unique=False)


def downgrade() -> None:
    op.drop_index('ix_payments_invoice_id', table_name='payments')
    op.drop_table('payments')
    op.drop_index('ix_notifications_tenant_id_status_created_at', table_name='notifications')
    op.drop_index('ix_notifications_tenant_id_created_at', table_name='notifications')
    op.drop_index('ix_notifications_guardian_id', table_name='notifications')
    op.drop_index('ix_notifications_broadcast_id', table_name='notifications', postgresql_where=sa.text('broadcast_id IS NOT NULL'))
    op.drop_table('notifications')
    op.drop_index('ix_invoices_tenant_id_status_due_on', table_name='invoices')
    op.drop_index('ix_invoices_tenant_id_month', table_name='invoices')
    op.drop_index('ix_invoices_student_id', table_name='invoices')
    op.drop_table('invoices')
    op.drop_index('ix_attendance_records_student_id_checked_at', table_name='attendance_records')
    op.drop_table('attendance_records')
    op.drop_table('timetable_slots')
    op.drop_index('uq_enrolments_student_id_class_id_active', table_name='enrolments', postgresql_where=sa.text("status = 'active'"))
    op.drop_index('ix_enrolments_tenant_id_status', table_name='enrolments')
    op.drop_index('ix_enrolments_student_id', table_name='enrolments')
    op.drop_index('ix_enrolments_class_id_status', table_name='enrolments')
    op.drop_table('enrolments')
    op.drop_index('ix_class_sessions_term_id', table_name='class_sessions')
    op.drop_index('ix_class_sessions_tenant_id_starts_at', table_name='class_sessions')
    op.drop_table('class_sessions')
    op.drop_index('ix_broadcasts_tenant_id_created_at', table_name='broadcasts')
    op.drop_table('broadcast_chunks')
    op.drop_table('broadcasts')
    op.drop_index('ix_student_guardians_guardian_id', table_name='student_guardians')
    op.drop_table('student_guardians')
    op.drop_table('roster_import_errors')
    op.drop_index('ix_classes_tenant_id_status', table_name='classes')
    op.drop_table('classes')
    op.drop_table('terms')
    op.drop_index('uq_students_tenant_id_external_ref', table_name='students', postgresql_where=sa.text('external_ref IS NOT NULL'))
    op.drop_index('ix_students_tenant_id_status', table_name='students')
    op.drop_index('ix_students_tenant_id_name', table_name='students')
    op.drop_table('students')
    op.drop_index('ix_roster_imports_tenant_id_started_at', table_name='roster_imports')
    op.drop_table('roster_imports')
    op.drop_index('ix_reports_tenant_id_created_at', table_name='reports')
    op.drop_table('reports')
    op.drop_index('uq_guardians_tenant_id_phone', table_name='guardians', postgresql_where=sa.text('phone IS NOT NULL'))
    op.drop_table('guardians')
