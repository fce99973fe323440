"""Parameter models of the ``billing.*`` intents (pydantic only: cheap to import)."""

from __future__ import annotations

import datetime as dt
import uuid

from pydantic import Field

from app.handler_api import IntentParams


class MonthlySettlementParams(IntentParams):
    month: str | None = Field(
        default=None, pattern=r"^\d{4}-(0[1-9]|1[0-2])$",
        description="YYYY-MM to bill; default the month (Asia/Seoul) the job was meant for.")
    due_day: int = Field(default=10, ge=1, le=28, description="Day of the month payment is due.")


class PaymentRemindersParams(IntentParams):
    as_of: dt.date | None = Field(
        default=None, description="Overdue as of this day; default the job's day.")
    min_days_between: int = Field(
        default=7, ge=1, le=90, description="Remind about one invoice at most this often.")


class SyncPaymentStatusParams(IntentParams):
    invoice_ids: list[uuid.UUID] | None = Field(
        default=None, max_length=5000,
        description="Only these invoices; default every open invoice of the academy.")


class ApplyLateFeesParams(IntentParams):
    as_of: dt.date | None = Field(
        default=None, description="Overdue as of this day; default the job's day.")
    grace_days: int = Field(default=7, ge=0, le=90,
                            description="Days after the due date before a fee applies.")
    percent: float = Field(default=5.0, gt=0, le=30, description="Late fee, % of the amount.")
    minimum: int = Field(default=5000, ge=0, description="Smallest late fee in KRW.")
    notify_guardians: bool = Field(default=True, description="Tell the guardians of the fee.")
