"""What a handler (the business, ``handlers/``) may import from the engine, and nothing else.

The job's context (its tenant's session, progress, checkpoints, child jobs, a shared outside
rate), the errors that steer retries, the manifest's building blocks (intents, their parameter
models, retry policies, schedules), the engine's settings and the means to declare the
business's own (``setting``, read by the engine's loader), the declarative base its own tables
build on, CSV cells a spreadsheet does not run as formulas, a span around each call to an
outside service (``outside_call``: the job's trace goes on there); and what a business command (the
manifest module's ``COMMANDS``) gets from the engine's command line. An import-linter contract
(pyproject.toml) keeps ``handlers`` to this module.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

from sqlalchemy.orm import Session

from app.core.csv_export import safe_cell, safe_text_sql, safe_writer
from app.core.declared import setting
from app.core.errors import IntentRefused, PermanentError, TransientError, WaitingError
from app.core.manifest import Intent, IntentParams, NoParams, RetryPolicy, Schedule
from app.core.settings import DeclaredSettings, LazySettings, Settings, SettingsError, settings
from app.run.context import JobContext, RunAborted
from app.run.spans import OutsideCall, outside_call
from app.store.models import Base, Tenant


class Operations(Protocol):
    """What a business command gets from ``jobq`` (its ``register(app, operations)`` and
    ``on_run(operations)`` hooks, named in the manifest module's ``COMMANDS``): the database it
    works on, the academies, and asking for work. ``on_run`` returns the lines it wants in
    ``jobq run``'s summary (printed last, once everything is up), or None."""

    database_url: str
    home: Path
    #: ``jobq run`` was asked for the demo academy (``--demo``, the default).
    demo: bool
    #: How to call jobq from another terminal in this folder: ``jobq`` when it is on PATH,
    #: else its path (``.venv/bin/jobq``). Commands printed for people to paste start with it.
    jobq: str

    def session(self) -> Session:
        """A session on the engine's own connection: every tenant's rows (the caller commits)."""

    def ensure_tenant(self, name: str) -> str:
        """The id of the academy named ``name``, created when there is none."""

    def submit_for_tenant(self, session: Session, tenant_id: str,
                          requests: Sequence[tuple[str, dict[str, Any]]]) -> list[str]:
        """Ask for ``(intent_key, intent_params)`` jobs of a tenant in ``session``; published
        once it commits. Bad input raises IntentRefused (its failed rows are in the session)."""


__all__ = [
    "Base",
    "DeclaredSettings",
    "Intent",
    "IntentParams",
    "IntentRefused",
    "JobContext",
    "LazySettings",
    "NoParams",
    "Operations",
    "OutsideCall",
    "PermanentError",
    "RetryPolicy",
    "RunAborted",
    "Schedule",
    "Settings",
    "SettingsError",
    "Tenant",
    "TransientError",
    "WaitingError",
    "outside_call",
    "safe_cell",
    "safe_text_sql",
    "safe_writer",
    "setting",
    "settings",
]
