"""Parameter models of the ``attendance.*`` intents (pydantic only: cheap to import)."""

from __future__ import annotations

import datetime as dt
import uuid

from pydantic import Field

from app.handler_api import IntentParams


class NotifyGuardiansLateParams(IntentParams):
    student_id: uuid.UUID = Field(description="The student who arrived late.")
    notify_time: dt.datetime = Field(
        description="When the student arrived (ISO 8601; a naive time is the academy's).")
    session_id: uuid.UUID | None = Field(
        default=None,
        description="The class session; found from the student's timetable when omitted.")


class SessionParams(IntentParams):
    session_id: uuid.UUID = Field(description="The class session.")


class MarkUncheckedAbsentParams(SessionParams):
    notify_guardians: bool = Field(
        default=False, description="Then notify the absentees' guardians (a follow-up job).")


class DailySummaryParams(IntentParams):
    date: dt.date | None = Field(
        default=None, description="The day to summarise; default the day the job was meant for.")
