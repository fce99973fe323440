"""Payments from the outside payment gateway, over HTTP: the retry scenario.

The gateway is asked ``POST {JOBQ_PAYMENT_GATEWAY_URL}/payments/search`` with signed JSON
``{"tenant_id", "invoice_ids"}`` and answers ``{"payments": [{"id", "invoice_id", "amount",
"paid_at", "method", "status"}]}``. 5xx, 429, timeouts and lost connections are transient (the
job is retried with backoff); other 4xx fail the job with the gateway's reason.
"""

from __future__ import annotations

import datetime as dt
import json
import uuid
from typing import Any

import requests
from sqlalchemy import func, select
from sqlalchemy.dialects.postgresql import insert

from app.handler_api import JobContext, PermanentError, settings
from handlers.billing.params import SyncPaymentStatusParams
from handlers.models import Invoice, Payment
from handlers.notify.channels import post_signed
from handlers.settings import business

#: Invoices asked about per request.
BATCH = 200
PAID_STATUSES = ("paid", "succeeded", "captured")


def sync_payment_status(ctx: JobContext, params: SyncPaymentStatusParams) -> dict:
    """Record the gateway's payments of open invoices; mark the invoices paid in full paid."""
    cfg = business
    if not cfg.payment_gateway_url:
        raise PermanentError("no payment gateway configured (JOBQ_PAYMENT_GATEWAY_URL)")
    url = cfg.payment_gateway_url.rstrip("/") + "/payments/search"
    tenant = uuid.UUID(ctx.tenant_id)
    query = select(Invoice.id).where(Invoice.tenant_id == tenant, Invoice.status == "open")
    if params.invoice_ids is not None:
        query = query.where(Invoice.id.in_(params.invoice_ids))
    open_ids = [str(i) for i in ctx.session.scalars(query.order_by(Invoice.id))]
    http = requests.Session()
    recorded = 0
    for start in range(0, len(open_ids), BATCH):
        batch = open_ids[start:start + BATCH]
        body = json.dumps({"tenant_id": ctx.tenant_id, "invoice_ids": batch}).encode()
        reply = post_signed(http, url, body, (cfg.payment_gateway_secret or "").encode(),
                            settings.outside_call_timeout, service="payment-gateway")
        recorded += _record(ctx, set(batch), _payments(reply))
        ctx.progress(start + len(batch), len(open_ids), "asking the payment gateway")
    paid = _settle(ctx, open_ids)
    return {"invoices_checked": len(open_ids), "payments_recorded": recorded,
            "invoices_paid": paid}


def _payments(reply: requests.Response) -> list[dict[str, Any]]:
    try:
        data = reply.json()
    except ValueError:
        raise PermanentError("the payment gateway answered with something that is not JSON") from None
    payments = data.get("payments") if isinstance(data, dict) else None
    if not isinstance(payments, list):
        raise PermanentError("the payment gateway's answer has no 'payments' list")
    return payments


def _record(ctx: JobContext, asked: set[str], payments: list[dict[str, Any]]) -> int:
    rows = []
    for p in payments:
        if p.get("status", "paid") not in PAID_STATUSES or str(p.get("invoice_id")) not in asked:
            continue  # a refund, a pending card, or someone else's invoice: not ours to record
        try:
            rows.append({
                "tenant_id": uuid.UUID(ctx.tenant_id), "invoice_id": uuid.UUID(str(p["invoice_id"])),
                "amount": int(p["amount"]), "paid_at": dt.datetime.fromisoformat(p["paid_at"]),
                "method": p.get("method"), "source": "gateway",
                "provider_payment_id": str(p["id"]),
            })
        except (KeyError, TypeError, ValueError) as exc:
            raise PermanentError(f"malformed payment from the gateway: {p!r:.200} ({exc})") from None
    if not rows:
        return 0
    # A payment the gateway reports again (every sync does) is recorded once.
    return ctx.session.execute(
        insert(Payment).values(rows)
        .on_conflict_do_nothing(index_elements=["tenant_id", "provider_payment_id"])
    ).rowcount


def _settle(ctx: JobContext, invoice_ids: list[str]) -> int:
    """Mark the open invoices whose payments cover amount and late fee paid."""
    if not invoice_ids:
        return 0
    totals = (
        select(Payment.invoice_id, func.sum(Payment.amount).label("paid"),
               func.max(Payment.paid_at).label("last"))
        .where(Payment.invoice_id.in_([uuid.UUID(i) for i in invoice_ids]))
        .group_by(Payment.invoice_id)
        .subquery()
    )
    covered = ctx.session.execute(
        select(Invoice, totals.c.last)
        .join(totals, totals.c.invoice_id == Invoice.id)
        .where(Invoice.status == "open", totals.c.paid >= Invoice.amount + Invoice.late_fee)
        .with_for_update(of=Invoice)
    ).all()
    for invoice, last in covered:
        invoice.status = "paid"
        invoice.paid_at = last
    return len(covered)
