"""Parameter models of the ``communication.*`` intents (pydantic only: cheap to import)."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Literal

from pydantic import Field, model_validator

from app.handler_api import IntentParams


class BroadcastParams(IntentParams):
    title: str = Field(min_length=1, max_length=100,
                       description="The subject line, e.g. '설 연휴 휴원 안내'.")
    message: str = Field(min_length=1, max_length=2000,
                         description="The text guardians read (Korean); the academy's name is "
                                     "put in front.")
    class_id: uuid.UUID | None = Field(
        default=None,
        description="Only the guardians of this class's students; default every guardian of "
                    "the academy's active students.")
    chunk_size: int = Field(default=500, ge=10, le=5000,
                            description="Guardians per chunk job.")


class BroadcastChunkParams(IntentParams):
    broadcast_id: uuid.UUID = Field(description="The broadcast the chunk belongs to.")
    chunk_no: int = Field(ge=0, description="Which chunk of it.")


class SendMessageParams(IntentParams):
    guardian_id: uuid.UUID | None = Field(default=None, description="Message this guardian ...")
    student_id: uuid.UUID | None = Field(
        default=None, description="... or the guardians of this student.")
    title: str = Field(min_length=1, max_length=100, description="The subject line.")
    message: str = Field(min_length=1, max_length=2000, description="The text (Korean).")
    all_guardians: bool = Field(
        default=False, description="With student_id: every guardian, not only the primary one.")
    channel: Literal["kakao", "sms", "email"] | None = Field(
        default=None, description="Send on this channel; default each guardian's preferred.")

    @model_validator(mode="after")
    def _one_recipient(self) -> SendMessageParams:
        if (self.guardian_id is None) == (self.student_id is None):
            raise ValueError("give exactly one of guardian_id and student_id")
        return self


class RetryFailedDeliveriesParams(IntentParams):
    job_id: uuid.UUID | None = Field(
        default=None, description="Only the messages of this job; default any job's.")
    since_hours: int = Field(default=24, ge=1, le=24 * 30,
                             description="Messages created this many hours before the job.")
    max_attempts: int = Field(default=5, ge=1, le=20,
                              description="Leave a message alone after this many attempts.")
    limit: int = Field(default=1000, ge=1, le=20000, description="At most this many messages.")


class DailyDigestParams(IntentParams):
    date: dt.date | None = Field(
        default=None, description="The day to tell about; default the day the job was meant for.")
