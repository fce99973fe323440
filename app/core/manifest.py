"""The intent manifest: every intent key mapped to its handler, parameter model and options.

Entries name their handler and parameter model as ``"module:attribute"`` strings, so reading
the manifest imports no handler code. A handler module is imported the first time a process
runs that intent; :func:`check` imports them all and is what the tests (and
``jobq intents check``) use to keep a typo out of production.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from pydantic import BaseModel, ConfigDict

from app.core.settings import settings

QUEUES = ("dispatch", "realtime", "bulk", "maintenance")
KEY_PATTERN = re.compile(r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+$")


class IntentParams(BaseModel):
    """Base of every parameter model: unknown fields are an error, not silently dropped."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class NoParams(IntentParams):
    """For intents that take no parameters."""


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with full jitter: ``base * factor**(attempt-1)``, capped."""

    base: float | None = None  # seconds; None: JOBQ_RETRY_BACKOFF_BASE
    factor: float = 2.0
    maximum: float | None = None  # seconds; None: JOBQ_RETRY_BACKOFF_MAX
    jitter: bool = True


@dataclass(frozen=True)
class Intent:
    """One manifest entry."""

    key: str
    handler: str  # "package.module:function"
    params: str = "app.core.manifest:NoParams"  # "package.module:Model"
    description: str = ""
    queue: str = "realtime"
    max_retries: int | None = None  # None: JOBQ_DEFAULT_MAX_RETRIES
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    time_limit: int | None = None  # seconds; None: JOBQ_DEFAULT_TIME_LIMIT
    #: Parameter fields whose values are redacted wherever the job is shown.
    secret_params: tuple[str, ...] = ()
    #: Every job of this intent waits in ``awaiting_approval`` until a person approves it.
    requires_approval: bool = False

    def __post_init__(self) -> None:
        if not KEY_PATTERN.match(self.key):
            raise ManifestError(
                f"intent key {self.key!r} must be dotted lowercase words, "
                "e.g. 'attendance.exec.notify_guardians_late'"
            )
        for ref, what in ((self.handler, "handler"), (self.params, "params")):
            if ref.count(":") != 1:
                raise ManifestError(f"{self.key}: {what} {ref!r} must be 'module:attribute'")
        if self.queue not in QUEUES:
            raise ManifestError(f"{self.key}: queue {self.queue!r} is not one of {QUEUES}")
        if self.time_limit is not None and not 0 < self.time_limit <= settings.max_time_limit:
            raise ManifestError(
                f"{self.key}: time_limit {self.time_limit} must be within "
                f"1..{settings.max_time_limit} (JOBQ_MAX_TIME_LIMIT)"
            )

    @property
    def family(self) -> str:
        return self.key.split(".", 1)[0]

    @property
    def effective_max_retries(self) -> int:
        return settings.default_max_retries if self.max_retries is None else self.max_retries

    @property
    def effective_time_limit(self) -> int:
        return self.time_limit or settings.default_time_limit

    # Resolved lazily and cached on the (frozen) instance.
    @cached_property
    def params_model(self) -> type[BaseModel]:
        model = _resolve(self.params, f"{self.key}: params")
        if not (isinstance(model, type) and issubclass(model, BaseModel)):
            raise ManifestError(f"{self.key}: params {self.params!r} is not a pydantic model")
        return model

    @cached_property
    def function(self) -> Callable[..., Any]:
        fn = _resolve(self.handler, f"{self.key}: handler")
        if not callable(fn):
            raise ManifestError(f"{self.key}: handler {self.handler!r} is not callable")
        return fn


@dataclass(frozen=True)
class Schedule:
    """A periodic intent every installation has: the manifest's ``SCHEDULES`` beside its
    ``INTENTS``. ``jobq run`` (and ``jobq schedules defaults``) create the missing ones; from
    then on they live in ``job_schedules``, where operators pause or change them."""

    name: str
    intent_key: str
    cron: str
    description: str
    timezone: str = "Asia/Seoul"
    intent_params: Mapping[str, Any] = field(default_factory=dict)


class ManifestError(Exception):
    """The manifest is wrong; the message names the entry and what is wrong with it."""


def _resolve(ref: str, what: str) -> Any:
    module_name, _, attr = ref.partition(":")
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:
        raise ManifestError(f"{what}: cannot import {module_name!r}: {exc!r}") from exc
    try:
        return getattr(module, attr)
    except AttributeError:
        raise ManifestError(f"{what}: module {module_name!r} has no {attr!r}") from None


class Manifest:
    """The intents by key, and the schedules every installation has."""

    def __init__(self, intents: Iterable[Intent], schedules: Iterable[Schedule] = ()):
        self.schedules: tuple[Schedule, ...] = tuple(schedules)
        self.intents: dict[str, Intent] = {}
        for intent in intents:
            if intent.key in self.intents:
                raise ManifestError(f"intent key {intent.key!r} appears twice in the manifest")
            self.intents[intent.key] = intent

    def __contains__(self, key: object) -> bool:
        return key in self.intents

    def __iter__(self):
        return iter(self.intents.values())

    def __len__(self) -> int:
        return len(self.intents)

    def get(self, key: str) -> Intent | None:
        return self.intents.get(key)

    def suggest(self, key: str) -> list[str]:
        import difflib

        return difflib.get_close_matches(key, list(self.intents), n=3, cutoff=0.6)


def load(ref: str | None = None) -> Manifest:
    """Read the manifest named by ``ref`` (default ``JOBQ_MANIFEST``), and the business's
    settings it names (``SETTINGS``); imports no handler."""
    ref = ref or settings.manifest
    if ref.count(":") != 1:
        raise ManifestError(f"JOBQ_MANIFEST={ref!r} must be 'module:attribute'")
    entries = _resolve(ref, "manifest")
    module = importlib.import_module(ref.partition(":")[0])
    business = getattr(module, "SETTINGS", None)
    if business:
        # The business's own settings ("module:attribute" of their LazySettings), read now: a
        # malformed one stops whoever reads the manifest (a worker as it starts, beat, the API,
        # jobq run), naming it, rather than the first job that sends a message.
        _resolve(business, "settings").get()
    return Manifest(entries, getattr(module, "SCHEDULES", ()))


def check(manifest: Manifest) -> list[str]:
    """Import every handler and parameter model; return one line per broken entry."""
    problems: list[str] = []
    for intent in manifest:
        for attr in ("params_model", "function"):
            try:
                getattr(intent, attr)
            except ManifestError as exc:
                problems.append(str(exc))
    return problems
