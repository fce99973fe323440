"""Invoices: the monthly settlement, reminders for overdue ones, and late fees."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Sequence

from sqlalchemy import and_, func, literal, or_, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from app.handler_api import JobContext
from handlers import periods
from handlers.billing.params import (
    ApplyLateFeesParams,
    MonthlySettlementParams,
    PaymentRemindersParams,
)
from handlers.models import AcademyClass, Enrolment, Invoice
from handlers.notify.recipients import academy_name, guardians_of
from handlers.notify.sending import Outgoing, send_for_job
from handlers.notify.templates import date_ko, month_ko, won


def create_invoices(session: Session, tenant_id: str, month: dt.date, due_day: int = 10) -> int:
    """One invoice per enrolment active in ``month``, never two; how many were new."""
    tenant = uuid.UUID(str(tenant_id))
    month_end = periods.next_month(month) - dt.timedelta(days=1)
    amount = func.coalesce(Enrolment.monthly_fee, AcademyClass.monthly_fee)
    billable = (
        select(Enrolment.tenant_id, Enrolment.id, Enrolment.student_id, Enrolment.class_id,
               literal(month), amount, literal(month.replace(day=due_day)))
        .join(AcademyClass, AcademyClass.id == Enrolment.class_id)
        .where(Enrolment.tenant_id == tenant, Enrolment.status == "active",
               Enrolment.started_on <= month_end,
               or_(Enrolment.ended_on.is_(None), Enrolment.ended_on >= month),
               AcademyClass.status == "active", amount > 0)
    )
    return session.execute(
        insert(Invoice)
        .from_select(["tenant_id", "enrolment_id", "student_id", "class_id", "month", "amount",
                      "due_on"], billable)
        .on_conflict_do_nothing(index_elements=["enrolment_id", "month"])
    ).rowcount


def monthly_settlement(ctx: JobContext, params: MonthlySettlementParams) -> dict:
    """Bill the month: one invoice per active enrolment and month, never two."""
    month = (periods.parse_month(params.month) if params.month
             else periods.month_start(periods.job_date(ctx)))
    created = create_invoices(ctx.session, ctx.tenant_id, month, params.due_day)
    total = ctx.session.scalar(select(func.count()).select_from(Invoice).where(
        Invoice.tenant_id == uuid.UUID(ctx.tenant_id), Invoice.month == month))
    return {"month": month.strftime("%Y-%m"), "created": created,
            "already_billed": (total or 0) - created}


def payment_reminders(ctx: JobContext, params: PaymentRemindersParams) -> dict:
    """Remind guardians of invoices past their due date, each at most every few days."""
    tenant = uuid.UUID(ctx.tenant_id)
    as_of = params.as_of or periods.job_date(ctx)
    overdue = _overdue(ctx.session, tenant, and_(
        Invoice.due_on < as_of,
        or_(Invoice.last_reminded_on.is_(None),
            Invoice.last_reminded_on <= as_of - dt.timedelta(days=params.min_days_between))))
    academy = academy_name(ctx.session, ctx.tenant_id)
    messages = _notices(ctx.session, ctx.tenant_id, overdue, lambda inv, name: dict(
        template="billing.reminder", academy=academy, class_name=name, month=month_ko(inv.month),
        amount=won(inv.total), due=date_ko(inv.due_on)))
    sent = send_for_job(ctx, messages, fail_if_nothing_delivered=False)
    for invoice, _ in overdue:
        invoice.reminders_sent += 1
        invoice.last_reminded_on = as_of
    return {"as_of": as_of.isoformat(), "overdue_invoices": len(overdue),
            "notifications": sent.as_dict()}


def apply_late_fees(ctx: JobContext, params: ApplyLateFeesParams) -> dict:
    """Add a late fee, once, to invoices still open ``grace_days`` after their due date."""
    tenant = uuid.UUID(ctx.tenant_id)
    as_of = params.as_of or periods.job_date(ctx)
    late = _overdue(ctx.session, tenant, and_(
        Invoice.due_on < as_of - dt.timedelta(days=params.grace_days),
        Invoice.late_fee_applied_at.is_(None)))
    applied_at = periods.now()
    for invoice, _ in late:
        fee = max(params.minimum, round(invoice.amount * params.percent / 100, -1))
        invoice.late_fee = int(fee)
        invoice.late_fee_applied_at = applied_at
    sent = None
    if params.notify_guardians and late:
        academy = academy_name(ctx.session, ctx.tenant_id)
        messages = _notices(ctx.session, ctx.tenant_id, late, lambda inv, name: dict(
            template="billing.late_fee", academy=academy, class_name=name,
            month=month_ko(inv.month), late_fee=won(inv.late_fee), total=won(inv.total)))
        sent = send_for_job(ctx, messages, fail_if_nothing_delivered=False).as_dict()
    return {"as_of": as_of.isoformat(), "invoices": len(late),
            "late_fees_total": sum(inv.late_fee for inv, _ in late), "notifications": sent}


def _overdue(session: Session, tenant: uuid.UUID, condition) -> list[tuple[Invoice, str]]:
    """Open invoices meeting ``condition``, locked, with their class name."""
    rows = session.execute(
        select(Invoice, AcademyClass.name)
        .join(AcademyClass, AcademyClass.id == Invoice.class_id)
        .where(Invoice.tenant_id == tenant, Invoice.status == "open", condition)
        .order_by(Invoice.due_on, Invoice.id)
        .with_for_update(of=Invoice)
    ).all()
    return [(invoice, name) for invoice, name in rows]


def _notices(session: Session, tenant_id: str, invoices: Sequence[tuple[Invoice, str]],
             values) -> list[Outgoing]:
    """One message per invoice and guardian of its student."""
    contacts: dict[str, list] = {}
    for c in guardians_of(session, tenant_id, {inv.student_id for inv, _ in invoices}):
        contacts.setdefault(c.student_id, []).append(c)
    messages = []
    for invoice, class_name in invoices:
        fields = values(invoice, class_name)
        template = fields.pop("template")
        for c in contacts.get(str(invoice.student_id), []):
            messages.append(c.notice(template, topic=f"invoice:{invoice.id}", **fields))
    return messages
