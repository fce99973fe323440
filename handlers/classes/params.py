"""Parameter models of the ``class.*`` intents (pydantic only: cheap to import)."""

from __future__ import annotations

import datetime as dt
import uuid

from pydantic import Field, model_validator

from app.handler_api import IntentParams


class NotifyScheduleChangeParams(IntentParams):
    class_id: uuid.UUID = Field(description="The class whose schedule changed.")
    message: str | None = Field(
        default=None, min_length=1, max_length=500,
        description="The change in the guardians' words (Korean); composed when a session moves.")
    session_id: uuid.UUID | None = Field(default=None, description="A session that moves.")
    new_starts_at: dt.datetime | None = Field(default=None, description="Its new start.")
    new_ends_at: dt.datetime | None = Field(default=None, description="Its new end.")

    @model_validator(mode="after")
    def _says_what_changed(self) -> NotifyScheduleChangeParams:
        moving = (self.session_id, self.new_starts_at)
        if any(v is not None for v in moving) and not all(v is not None for v in moving):
            raise ValueError("session_id and new_starts_at go together")
        if self.message is None and self.session_id is None:
            raise ValueError("give a message, or a session_id with new_starts_at")
        return self


class GenerateTermSessionsParams(IntentParams):
    term_id: uuid.UUID = Field(description="The term whose dates bound the sessions.")
    class_id: uuid.UUID | None = Field(
        default=None, description="Only this class; default every active class of the term.")


class CloseTermParams(IntentParams):
    term_id: uuid.UUID = Field(description="The term to close.")


class ArchiveClassParams(IntentParams):
    class_id: uuid.UUID = Field(description="The class to archive.")
