"""The monthly billing report: every invoice of a month with what was paid, and the month's
totals per class (billed, collected, outstanding, collection rate)."""

from __future__ import annotations

import datetime as dt
import uuid
from collections import defaultdict
from typing import Any

from sqlalchemy import func, select

from app.handler_api import JobContext
from handlers import periods
from handlers.models import AcademyClass, Invoice, Payment, Student
from handlers.notify.templates import month_ko
from handlers.report.files import report_dir, save_report, write_csv
from handlers.report.params import MonthlyBillingParams

HEADINGS = ("학생", "학번", "반", "청구월", "수강료", "연체료", "청구 합계", "납부액", "미납액",
            "납부 기한", "상태", "납부일")
STATUS_KO = {"open": "미납", "paid": "완납", "void": "취소"}


def monthly_billing(ctx: JobContext, params: MonthlyBillingParams) -> dict[str, Any]:
    """Report the month's invoices (default: the month before the job's) and their payments."""
    tenant = uuid.UUID(ctx.tenant_id)
    if params.month:
        month = periods.parse_month(params.month)
    else:
        month = periods.month_start(periods.month_start(periods.job_date(ctx)) - dt.timedelta(days=1))
    last_day = periods.next_month(month) - dt.timedelta(days=1)
    as_of = periods.job_date(ctx)
    paid = (select(Payment.invoice_id, func.sum(Payment.amount).label("amount"),
                   func.max(Payment.paid_at).label("paid_at"))
            .where(Payment.tenant_id == tenant).group_by(Payment.invoice_id).subquery())
    invoices = ctx.session.execute(
        select(Invoice, Student.name, Student.external_ref, AcademyClass.name,
               func.coalesce(paid.c.amount, 0), paid.c.paid_at)
        .join(Student, Student.id == Invoice.student_id)
        .join(AcademyClass, AcademyClass.id == Invoice.class_id)
        .outerjoin(paid, paid.c.invoice_id == Invoice.id)
        .where(Invoice.tenant_id == tenant, Invoice.month == month)
        .order_by(AcademyClass.name, Student.name, Invoice.id)).all()
    rows = []
    per_class: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for inv, student, ref, class_name, paid_amount, paid_at in invoices:
        billed = 0 if inv.status == "void" else inv.amount + inv.late_fee
        outstanding = max(0, billed - paid_amount) if inv.status == "open" else 0
        rows.append((student, ref or "", class_name, month.strftime("%Y-%m"), inv.amount,
                     inv.late_fee, billed, paid_amount, outstanding, inv.due_on.isoformat(),
                     STATUS_KO.get(inv.status, inv.status),
                     periods.local_date(paid_at).isoformat() if paid_at else ""))
        c = per_class[class_name]
        c["invoices"] += 1
        c["billed"] += billed
        c["collected"] += paid_amount
        c["outstanding"] += outstanding
        c["late_fees"] += inv.late_fee if inv.status != "void" else 0
        c["overdue"] += int(inv.status == "open" and inv.due_on < as_of)
        c["void"] += int(inv.status == "void")
    classes = [{"class": name, **dict(c), "collection_rate": _pct(c["collected"], c["billed"])}
               for name, c in sorted(per_class.items())]
    totals = {k: sum(c[k] for c in classes)
              for k in ("invoices", "billed", "collected", "outstanding", "late_fees", "overdue",
                        "void")}
    summary = {"title": f"{month_ko(month)} 수강료 정산 보고서", "month": month.strftime("%Y-%m"),
               "as_of": as_of.isoformat(), **totals,
               "collection_rate": _pct(totals["collected"], totals["billed"]),
               "classes": classes}
    path = report_dir(ctx.tenant_id, "monthly_billing") / f"monthly-billing-{month:%Y-%m}.csv"
    write_csv(path, ctx.job_id, HEADINGS, rows)
    report_id = save_report(ctx, kind="monthly_billing", start=month, end=last_day, path=path,
                            summary=summary)
    return {"report_id": report_id, "file": str(path),
            **{k: v for k, v in summary.items() if k not in ("classes", "title")}}


def _pct(part: int, whole: int) -> float | None:
    return round(100 * part / whole, 1) if whole else None
