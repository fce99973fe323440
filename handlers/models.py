"""The academy's domain tables: students and guardians, classes and sessions, attendance,
billing, notifications, reports, and the bookkeeping of roster imports and broadcasts.

Every table carries ``tenant_id``; handlers always filter on it. The unique keys are what make
handlers safe to run twice (an invoice per enrolment and month, a notification per job,
recipient and channel, a session per class and start time).
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Date,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    SmallInteger,
    Text,
    Time,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB, UUID
from sqlalchemy.orm import Mapped, mapped_column

from app.handler_api import Base

STUDENT_STATUSES = ("active", "inactive", "graduated", "merged")
#: What a guardian asked to be reached by. kakao and sms go through the message gateway.
CONTACT_CHANNELS = ("kakao", "sms", "email")
CLASS_STATUSES = ("active", "archived")
TERM_STATUSES = ("planned", "active", "closed")
ENROLMENT_STATUSES = ("active", "ended", "transferred")
SESSION_STATUSES = ("scheduled", "held", "cancelled")
ATTENDANCE_STATUSES = ("present", "late", "absent", "excused")
INVOICE_STATUSES = ("open", "paid", "void")
NOTIFICATION_STATUSES = ("pending", "sent", "failed")
BROADCAST_CHUNK_STATUSES = ("pending", "done")


def _in(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


def _id() -> Mapped[uuid.UUID]:
    return mapped_column(
        UUID(as_uuid=True), primary_key=True, server_default=text("gen_random_uuid()")
    )


def _tenant() -> Mapped[uuid.UUID]:
    return mapped_column(
        UUID(as_uuid=True), ForeignKey("tenants.id", ondelete="CASCADE"), nullable=False
    )


def _ref(table: str, *, nullable: bool = False, ondelete: str = "CASCADE") -> Any:
    return mapped_column(
        UUID(as_uuid=True), ForeignKey(f"{table}.id", ondelete=ondelete), nullable=nullable
    )


def _created() -> Mapped[dt.datetime]:
    return mapped_column(DateTime(timezone=True), nullable=False, server_default=func.now())


# --- people ---------------------------------------------------------------------------------------


class Student(Base):
    __tablename__ = "students"
    __table_args__ = (
        CheckConstraint(_in("status", STUDENT_STATUSES), name="status"),
        CheckConstraint("grade BETWEEN 1 AND 12", name="grade"),
        # The roster's student number: a re-imported (or resumed) row finds its student.
        Index("uq_students_tenant_id_external_ref", "tenant_id", "external_ref", unique=True,
              postgresql_where=text("external_ref IS NOT NULL")),
        Index("ix_students_tenant_id_status", "tenant_id", "status"),
        # Duplicate detection (merge) and look-ups by name.
        Index("ix_students_tenant_id_name", "tenant_id", "name"),
    )

    id: Mapped[uuid.UUID] = _id()
    tenant_id: Mapped[uuid.UUID] = _tenant()
    name: Mapped[str] = mapped_column(Text, nullable=False)
    #: The academy's own student number, as in its roster files.
    external_ref: Mapped[str | None] = mapped_column(Text)
    birth_date: Mapped[dt.date | None] = mapped_column(Date)
    school: Mapped[str | None] = mapped_column(Text)
    #: School year 1..12: 초1 = 1, 중1 = 7, 고1 = 10, 고3 = 12.
    grade: Mapped[int | None] = mapped_column(SmallInteger)
    phone: Mapped[str | None] = mapped_column(Text)
    email: Mapped[str | None] = mapped_column(Text)
    status: Mapped[str] = mapped_column(Text, nullable=False, server_default="active")
    #: Set when this record was merged into another (the duplicate keeps its id for history).
    merged_into_id: Mapped[uuid.UUID | None] = _ref("students", nullable=True, ondelete="SET NULL")
    joined_on: Mapped[dt.date | None] = mapped_column(Date)
    left_on: Mapped[dt.date | None] = mapped_column(Date)
    created_at: Mapped[dt.datetime] = _created()
    updated_at: Mapped[dt.datetime] = _created()


class Guardian(Base):
    """A parent or other guardian: the person notifications reach."""

    __tablename__ = "guardians"
    __table_args__ = (
        CheckConstraint(_in("preferred_channel", CONTACT_CHANNELS), name="preferred_channel"),
        # One guardian per phone number: siblings share their guardian, an import finds it.
        Index("uq_guardians_tenant_id_phone", "tenant_id", "phone", unique=True,
              postgresql_where=text("phone IS NOT NULL")),
    )

    id: Mapped[uuid.UUID] = _id()
    tenant_id: Mapped[uuid.UUID] = _tenant()
    name: Mapped[str] = mapped_column(Text, nullable=False)
    phone: Mapped[str | None] = mapped_column(Text)
    email: Mapped[str | None] = mapped_column(Text)
    kakao_id: Mapped[str | None] = mapped_column(Text)
    preferred_channel: Mapped[str] = mapped_column(Text, nullable=False, server_default="kakao")
    created_at: Mapped[dt.datetime] = _created()


class StudentGuardian(Base):
    __tablename__ = "student_guardians"
    __table_args__ = (Index("ix_student_guardians_guardian_id", "guardian_id"),)

    student_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), ForeignKey("students.id", ondelete="CASCADE"), primary_key=True
    )
    guardian_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), ForeignKey("guardians.id", ondelete="CASCADE"), primary_key=True
    )
    tenant_id: Mapped[uuid.UUID] = _tenant()
    #: 모, 부, 조모, ... as the academy writes it.
    relation: Mapped[str | None] = mapped_column(Text)
    #: Guardians marked primary get notices; the others only broadcasts.
    is_primary: Mapped[bool] = mapped_column(Boolean, nullable=False, server_default=text("true"))


# --- classes ----------------------------------------------------------------------------------


class Term(Base):
    __tablename__ = "terms"
    __table_args__ = (
        CheckConstraint(_in("status", TERM_STATUSES), name="status"),
        CheckConstraint("ends_on >= starts_on", name="period"),
        UniqueConstraint("tenant_id", "name"),
    )

    id: Mapped[uuid.UUID] = _id()
    tenant_id: Mapped[uuid.UUID] = _tenant()
    name: Mapped[str] = mapped_column(Text, nullable=False)
    starts_on: Mapped[dt.date] = mapped_column(Date, nullable=False)
    ends_on: Mapped[dt.date] = mapped_column(Date, nullable=False)
    status: Mapped[str] = mapped_column(Text, nullable=False, server_default="active")
    closed_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[dt.datetime] = _created()


class AcademyClass(Base):
    """A class (반): a subject taught to a group at fixed times each week."""

    __tablename__ = "classes"
    __table_args__ = (
        CheckConstraint(_in("status", CLASS_STATUSES), name="status"),
        CheckConstraint("monthly_fee >= 0", name="monthly_fee"),
        UniqueConstraint("tenant_id", "name"),
        Index("ix_classes_tenant_id_status", "tenant_id", "status"),
    )

    id: Mapped[uuid.UUID] = _id()
    tenant_id: Mapped[uuid.UUID] = _tenant()
    #: The term the class runs in; NULL: it runs all year.
    term_id: Mapped[uuid.UUID | None] = _ref("terms", nullable=True, ondelete="SET NULL")
    name: Mapped[str] = mapped_column(Text, nullable=False)
    subject: Mapped[str | None] = mapped_column(Text)
    teacher: Mapped[str | None] = mapped_column(Text)
    room: Mapped[str | None] = mapped_column(Text)
    capacity: Mapped[int | None] = mapped_column(Integer)
    #: Tuition per month in KRW.
    monthly_fee: Mapped[int] = mapped_column(Integer, nullable=False, server_default="0")
    status: Mapped[str] = mapped_column(Text, nullable=False, server_default="active")
    archived_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[dt.datetime] = _created()


class TimetableSlot(Base):
    """One weekly meeting of a class, in the academy's local time (Asia/Seoul)."""

    __tablename__ = "timetable_slots"
    __table_args__ = (
        CheckConstraint("weekday BETWEEN 0 AND 6", name="weekday"),
        CheckConstraint("ends_at > starts_at", name="times"),
        UniqueConstraint("class_id", "weekday", "starts_at"),
    )

    id: Mapped[uuid.UUID] = _id()
    tenant_id: Mapped[uuid.UUID] = _tenant()
    class_id: Mapped[uuid.UUID] = _ref("classes")
    #: 0 = Monday ... 6 = Sunday, as ``datetime.date.weekday()``.
    weekday: Mapped[int] = mapped_column(SmallInteger, nullable=False)
    starts_at: Mapped[dt.time] = mapped_column(Time, nullable=False)
    ends_at: Mapped[dt.time] = mapped_column(Time, nullable=False)
    room: Mapped[str | None] = mapped_column(Text)


class Enrolment(Base):
    __tablename__ = "enrolments"
    __table_args__ = (
        CheckConstraint(_in("status", ENROLMENT_STATUSES), name="status"),
        # A student is in a class once at a time; history rows (ended) may repeat.
        Index("uq_enrolments_student_id_class_id_active", "student_id", "class_id", unique=True,
              postgresql_where=text("status = 'active'")),
        Index("ix_enrolments_class_id_status", "class_id", "status"),
        Index("ix_enrolments_tenant_id_status", "tenant_id", "status"),
        Index("ix_enrolments_student_id", "student_id"),
    )

    id: Mapped[uuid.UUID] = _id()
    tenant_id: Mapped[uuid.UUID] = _tenant()
    student_id: Mapped[uuid.UUID] = _ref("students")
    class_id: Mapped[uuid.UUID] = _ref("classes")
    status: Mapped[str] = mapped_column(Text, nullable=False, server_default="active")
    started_on: Mapped[dt.date] = mapped_column(Date, nullable=False,
                                                server_default=func.current_date())
    ended_on: Mapped[dt.date | None] = mapped_column(Date)
    #: Overrides the class's fee (siblings' discount, scholarship); NULL: the class's fee.
    monthly_fee: Mapped[int | None] = mapped_column(Integer)
    created_at: Mapped[dt.datetime] = _created()


class ClassSession(Base):
    """One meeting of a class on a date: what attendance is taken for."""

    __tablename__ = "class_sessions"
    __table_args__ = (
        CheckConstraint(_in("status", SESSION_STATUSES), name="status"),
        CheckConstraint("ends_at > starts_at", name="times"),
        UniqueConstraint("class_id", "starts_at"),
        Index("ix_class_sessions_tenant_id_starts_at", "tenant_id", "starts_at"),
        Index("ix_class_sessions_term_id", "term_id"),
    )

    id: Mapped[uuid.UUID] = _id()
    tenant_id: Mapped[uuid.UUID] = _tenant()
    class_id: Mapped[uuid.UUID] = _ref("classes")
    term_id: Mapped[uuid.UUID | None] = _ref("terms", nullable=True, ondelete="SET NULL")
    starts_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    ends_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    room: Mapped[str | None] = mapped_column(Text)
    status: Mapped[str] = mapped_column(Text, nullable=False, server_default="scheduled")
    #: When the still-unchecked students were marked absent; NULL: attendance still open.
    attendance_closed_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    note: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[dt.datetime] = _created()


class AttendanceRecord(Base):
    __tablename__ = "attendance_records"
    __table_args__ = (
        CheckConstraint(_in("status", ATTENDANCE_STATUSES), name="status"),
        UniqueConstraint("session_id", "student_id"),
        Index("ix_attendance_records_student_id_checked_at", "student_id", "checked_at"),
    )

    id: Mapped[uuid.UUID] = _id()
    tenant_id: Mapped[uuid.UUID] = _tenant()
    session_id: Mapped[uuid.UUID] = _ref("class_sessions")
    student_id: Mapped[uuid.UUID] = _ref("students")
    status: Mapped[str] = mapped_column(Text, nullable=False)
    checked_at: Mapped[dt.datetime] = _created()
    #: Who set it: staff (a person at the desk), kiosk, auto (marked absent at the end).
    source: Mapped[str] = mapped_column(Text, nullable=False, server_default="staff")
    note: Mapped[str | None] = mapped_column(Text)


# --- billing ------------------------------------------------------------------------------------


class Invoice(Base):
    """A month's tuition of one enrolment."""

    __tablename__ = "invoices"
    __table_args__ = (
        CheckConstraint(_in("status", INVOICE_STATUSES), name="status"),
        CheckConstraint("extract(day FROM month) = 1", name="month_first_day"),
        CheckConstraint("amount >= 0 AND late_fee >= 0", name="amounts"),
        UniqueConstraint("enrolment_id", "month"),
        Index("ix_invoices_tenant_id_status_due_on", "tenant_id", "status", "due_on"),
        Index("ix_invoices_tenant_id_month", "tenant_id", "month"),
        Index("ix_invoices_student_id", "student_id"),
    )

    id: Mapped[uuid.UUID] = _id()
    tenant_id: Mapped[uuid.UUID] = _tenant()
    enrolment_id: Mapped[uuid.UUID] = _ref("enrolments")
    student_id: Mapped[uuid.UUID] = _ref("students")
    class_id: Mapped[uuid.UUID] = _ref("classes")
    #: The first day of the month billed.
    month: Mapped[dt.date] = mapped_column(Date, nullable=False)
    amount: Mapped[int] = mapped_column(Integer, nullable=False)
    late_fee: Mapped[int] = mapped_column(Integer, nullable=False, server_default="0")
    late_fee_applied_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    due_on: Mapped[dt.date] = mapped_column(Date, nullable=False)
    status: Mapped[str] = mapped_column(Text, nullable=False, server_default="open")
    paid_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    #: The payment gateway's id of this bill, once it was registered there.
    gateway_ref: Mapped[str | None] = mapped_column(Text)
    reminders_sent: Mapped[int] = mapped_column(Integer, nullable=False, server_default="0")
    last_reminded_on: Mapped[dt.date | None] = mapped_column(Date)
    created_at: Mapped[dt.datetime] = _created()

    @property
    def total(self) -> int:
        return self.amount + self.late_fee


class Payment(Base):
    __tablename__ = "payments"
    __table_args__ = (
        CheckConstraint("amount > 0", name="amount"),
        # A payment reported twice by the gateway is recorded once.
        UniqueConstraint("tenant_id", "provider_payment_id"),
        Index("ix_payments_invoice_id", "invoice_id"),
    )

    id: Mapped[uuid.UUID] = _id()
    tenant_id: Mapped[uuid.UUID] = _tenant()
    invoice_id: Mapped[uuid.UUID] = _ref("invoices")
    amount: Mapped[int] = mapped_column(Integer, nullable=False)
    paid_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    #: card, transfer, cash, ...
    method: Mapped[str | None] = mapped_column(Text)
    #: gateway (synced) or manual (entered at the desk).
    source: Mapped[str] = mapped_column(Text, nullable=False, server_default="manual")
    provider_payment_id: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[dt.datetime] = _created()


# --- communication ------------------------------------------------------------------------------


class Broadcast(Base):
    """One message to many guardians; its chunks are child jobs of ``job_id``."""

    __tablename__ = "broadcasts"
    __table_args__ = (
        UniqueConstraint("job_id"),
        Index("ix_broadcasts_tenant_id_created_at", "tenant_id", "created_at"),
    )

    id: Mapped[uuid.UUID] = _id()
    tenant_id: Mapped[uuid.UUID] = _tenant()
    #: The parent job that fanned the broadcast out.
    job_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), nullable=False)
    #: NULL: every guardian of the tenant.
    class_id: Mapped[uuid.UUID | None] = _ref("classes", nullable=True, ondelete="SET NULL")
    title: Mapped[str | None] = mapped_column(Text)
    body: Mapped[str] = mapped_column(Text, nullable=False)
    recipients_total: Mapped[int] = mapped_column(Integer, nullable=False, server_default="0")
    chunks_total: Mapped[int] = mapped_column(Integer, nullable=False, server_default="0")
    status: Mapped[str] = mapped_column(Text, nullable=False, server_default="sending")
    created_at: Mapped[dt.datetime] = _created()
    finished_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))


class BroadcastChunk(Base):
    """One slice of a broadcast's recipients, fixed when the broadcast fans out.

    Whichever run takes the row's lock first sends it (its chunk job, or the parent job once it
    has nothing else to do), so a chunk is never sent by two runs at once and never waits for a
    worker that is not coming.
    """

    __tablename__ = "broadcast_chunks"
    __table_args__ = (CheckConstraint(_in("status", BROADCAST_CHUNK_STATUSES), name="status"),)

    broadcast_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), ForeignKey("broadcasts.id", ondelete="CASCADE"), primary_key=True
    )
    chunk_no: Mapped[int] = mapped_column(Integer, primary_key=True)
    tenant_id: Mapped[uuid.UUID] = _tenant()
    guardian_ids: Mapped[list[uuid.UUID]] = mapped_column(ARRAY(UUID(as_uuid=True)),
                                                          nullable=False)
    status: Mapped[str] = mapped_column(Text, nullable=False, server_default="pending")
    #: The chunk job fanned out for it.
    job_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True))
    #: The job that sent it: its own chunk job, or the broadcast's parent job.
    sent_by_job_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True))
    sent: Mapped[int] = mapped_column(Integer, nullable=False, server_default="0")
    already_sent: Mapped[int] = mapped_column(Integer, nullable=False, server_default="0")
    failed: Mapped[int] = mapped_column(Integer, nullable=False, server_default="0")
    finished_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))


class Notification(Base):
    """One message of one job to one recipient over one channel.

    Written ``pending`` before the send and marked ``sent`` with the provider's id after, under
    the unique (job_id, recipient, channel): a rerun of the job finds the row and sends nothing.
    ``job_id`` has no foreign key on purpose: the message history outlives job retention.
    Nor do the guardian, student and broadcast ids (see below).
    """

    __tablename__ = "notifications"
    __table_args__ = (
        CheckConstraint(_in("status", NOTIFICATION_STATUSES), name="status"),
        UniqueConstraint("job_id", "recipient", "channel"),
        Index("ix_notifications_tenant_id_status_created_at", "tenant_id", "status",
              "created_at"),
        Index("ix_notifications_tenant_id_created_at", "tenant_id", "created_at"),
        Index("ix_notifications_guardian_id", "guardian_id"),
        Index("ix_notifications_broadcast_id", "broadcast_id",
              postgresql_where=text("broadcast_id IS NOT NULL")),
    )

    id: Mapped[uuid.UUID] = _id()
    tenant_id: Mapped[uuid.UUID] = _tenant()
    job_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), nullable=False)
    #: Who, stably: a guardian id, or ``guardian:student`` for a notice about one student.
    recipient: Mapped[str] = mapped_column(Text, nullable=False)
    #: The channel asked for: kakao, sms, email, or record.
    channel: Mapped[str] = mapped_column(Text, nullable=False)
    #: How it went out: record, smtp or webhook (what the settings routed the channel to).
    transport: Mapped[str] = mapped_column(Text, nullable=False)
    # Loose references, no foreign keys, on purpose: rows are written by the sending helper's
    # own transaction (JobContext.journal) while the handler's transaction may hold a lock on
    # the student, guardian or broadcast; a foreign-key check would wait for it forever.
    guardian_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True))
    student_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True))
    broadcast_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True))
    #: Phone number, e-mail address or Kakao id the message went to.
    address: Mapped[str | None] = mapped_column(Text)
    template: Mapped[str] = mapped_column(Text, nullable=False)
    subject: Mapped[str | None] = mapped_column(Text)
    body: Mapped[str] = mapped_column(Text, nullable=False)
    status: Mapped[str] = mapped_column(Text, nullable=False, server_default="pending")
    attempts: Mapped[int] = mapped_column(Integer, nullable=False, server_default="0")
    provider_message_id: Mapped[str | None] = mapped_column(Text)
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[dt.datetime] = _created()
    sent_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[dt.datetime] = _created()


# --- reports and imports ------------------------------------------------------------------------


class Report(Base):
    """A generated report: its file on disk and a summary to show without opening it."""

    __tablename__ = "reports"
    __table_args__ = (
        # Regenerating a report for the same period and scope replaces it.
        UniqueConstraint("tenant_id", "kind", "period_start", "period_end", "scope"),
        Index("ix_reports_tenant_id_created_at", "tenant_id", "created_at"),
    )

    id: Mapped[uuid.UUID] = _id()
    tenant_id: Mapped[uuid.UUID] = _tenant()
    #: weekly_attendance, monthly_billing, student_progress, tenant_export, ...
    kind: Mapped[str] = mapped_column(Text, nullable=False)
    period_start: Mapped[dt.date] = mapped_column(Date, nullable=False)
    period_end: Mapped[dt.date] = mapped_column(Date, nullable=False)
    #: What the report covers within the tenant: '' for all, else e.g. a student or class id.
    scope: Mapped[str] = mapped_column(Text, nullable=False, server_default="")
    file_path: Mapped[str | None] = mapped_column(Text)
    summary: Mapped[Any] = mapped_column(JSONB, nullable=False, server_default=text("'{}'::jsonb"))
    job_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True))
    created_at: Mapped[dt.datetime] = _created()


class RosterImport(Base):
    """One roster import (CSV): its counts while and after it runs."""

    __tablename__ = "roster_imports"
    __table_args__ = (
        UniqueConstraint("job_id"),
        Index("ix_roster_imports_tenant_id_started_at", "tenant_id", "started_at"),
    )

    id: Mapped[uuid.UUID] = _id()
    tenant_id: Mapped[uuid.UUID] = _tenant()
    job_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), nullable=False)
    source: Mapped[str] = mapped_column(Text, nullable=False)
    status: Mapped[str] = mapped_column(Text, nullable=False, server_default="running")
    rows_total: Mapped[int] = mapped_column(Integer, nullable=False, server_default="0")
    rows_imported: Mapped[int] = mapped_column(Integer, nullable=False, server_default="0")
    rows_unchanged: Mapped[int] = mapped_column(Integer, nullable=False, server_default="0")
    rows_bad: Mapped[int] = mapped_column(Integer, nullable=False, server_default="0")
    started_at: Mapped[dt.datetime] = _created()
    finished_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))


class RosterImportError(Base):
    """A row of a roster file that was not imported, and why."""

    __tablename__ = "roster_import_errors"
    __table_args__ = (UniqueConstraint("import_id", "line_number"),)

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    tenant_id: Mapped[uuid.UUID] = _tenant()
    import_id: Mapped[uuid.UUID] = _ref("roster_imports")
    line_number: Mapped[int] = mapped_column(Integer, nullable=False)
    reason: Mapped[str] = mapped_column(Text, nullable=False)
    raw: Mapped[str | None] = mapped_column(Text)
