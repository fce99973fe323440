"""Parameter models of the diagnostic intents."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from app.handler_api import IntentParams


class EchoParams(IntentParams):
    """Anything at all: ``system.exec.echo`` returns it."""

    model_config = IntentParams.model_config | {"extra": "allow"}


class SleepParams(IntentParams):
    seconds: float = Field(ge=0, le=3600, description="How long to sleep.")


class FlakyParams(IntentParams):
    failures: int = Field(ge=0, le=100, description="Transient failures before success.")
    payload: Any = None
