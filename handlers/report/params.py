"""Parameter models of the ``report.*`` intents (pydantic only: cheap to import)."""

from __future__ import annotations

import datetime as dt
import uuid

from pydantic import Field, model_validator

from app.handler_api import IntentParams


class WeeklyAttendanceParams(IntentParams):
    week_start: dt.date | None = Field(
        default=None,
        description="Any day of the week to report (Monday to Sunday); default the last whole "
                    "week before the day the job was meant for (the Monday 07:00 schedule "
                    "reports the week just ended).")
    class_id: uuid.UUID | None = Field(default=None,
                                       description="Only this class; default every class.")


class MonthlyBillingParams(IntentParams):
    month: str | None = Field(
        default=None, pattern=r"^\d{4}-(0[1-9]|1[0-2])$",
        description="YYYY-MM; default the month before the one the job was meant for.")


class StudentProgressParams(IntentParams):
    student_id: uuid.UUID = Field(description="The student.")
    from_date: dt.date | None = Field(
        default=None, description="First day; default twelve weeks before to_date.")
    to_date: dt.date | None = Field(
        default=None, description="Last day; default the day the job was meant for.")

    @model_validator(mode="after")
    def _ordered(self) -> StudentProgressParams:
        if self.from_date and self.to_date and self.from_date > self.to_date:
            raise ValueError("from_date is after to_date")
        return self


class ExportTenantDataParams(IntentParams):
    include_notifications: bool = Field(
        default=True, description="Include every message sent (the largest table).")
