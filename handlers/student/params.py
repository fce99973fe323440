"""Parameter models of the ``student.*`` intents (pydantic only: cheap to import)."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Literal

from pydantic import Field, model_validator

from app.handler_api import IntentParams

#: Inline CSV is for small rosters; larger files are uploaded to JOBQ_HOME/uploads.
MAX_INLINE_CSV = 48_000


class ImportRosterParams(IntentParams):
    file: str | None = Field(
        default=None, min_length=1, max_length=500,
        description="A CSV file under JOBQ_HOME/uploads, by its path there "
                    "(e.g. 'rosters/2026-spring.csv').")
    csv_text: str | None = Field(
        default=None, min_length=1, max_length=MAX_INLINE_CSV,
        description="The CSV itself, for a small roster pasted inline.")
    encoding: Literal["auto", "utf-8", "cp949"] = Field(
        default="auto",
        description="The file's encoding; auto tries UTF-8 (with or without BOM), then CP949 "
                    "(what Excel saves in Korea).")
    batch_size: int = Field(default=200, ge=10, le=5000,
                            description="Rows per batch: each batch commits with a checkpoint.")

    @model_validator(mode="after")
    def _one_source(self) -> ImportRosterParams:
        if (self.file is None) == (self.csv_text is None):
            raise ValueError("give exactly one of file and csv_text")
        return self


class TransferClassParams(IntentParams):
    student_id: uuid.UUID = Field(description="The student who moves.")
    from_class_id: uuid.UUID = Field(description="The class the student leaves.")
    to_class_id: uuid.UUID = Field(description="The class the student joins.")
    effective_on: dt.date | None = Field(
        default=None, description="First day in the new class; default the job's day.")
    notify_guardians: bool = Field(default=True, description="Tell the guardians of the move.")

    @model_validator(mode="after")
    def _two_classes(self) -> TransferClassParams:
        if self.from_class_id == self.to_class_id:
            raise ValueError("from_class_id and to_class_id are the same class")
        return self


class DeactivateGraduatesParams(IntentParams):
    as_of: dt.date | None = Field(
        default=None, description="Graduation day; default the job's day.")
    grade: int = Field(default=12, ge=1, le=12,
                       description="The graduating school year (12 = 고3).")
    dry_run: bool = Field(default=False,
                          description="Only list who would graduate; change nothing.")


class MergeDuplicatesParams(IntentParams):
    keep_student_id: uuid.UUID | None = Field(
        default=None, description="The record to keep; with duplicate_student_ids.")
    duplicate_student_ids: list[uuid.UUID] = Field(
        default_factory=list, max_length=50,
        description="Records merged into keep_student_id. Both omitted: find duplicates "
                    "(same name and birth date, or same name and a shared guardian) and merge "
                    "each group into its oldest record.")
    dry_run: bool = Field(default=False, description="Only list the merges; change nothing.")

    @model_validator(mode="after")
    def _explicit_or_found(self) -> MergeDuplicatesParams:
        if (self.keep_student_id is None) != (not self.duplicate_student_ids):
            raise ValueError("keep_student_id and duplicate_student_ids go together")
        if self.keep_student_id in self.duplicate_student_ids:
            raise ValueError("keep_student_id is also among duplicate_student_ids")
        return self
