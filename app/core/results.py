"""What a run leaves behind, as values: an error as one bounded line, a handler's result as
JSON the table can store (bounded, NUL and lone surrogates replaced), a progress report as a
short line for Flower."""

from __future__ import annotations

import json
import math
from typing import Any

from app.core.redaction import redact
from app.core.settings import settings

#: An error's text is cut to this many characters.
MAX_ERROR = 2_000


def describe(exc: BaseException) -> str:
    """``Type: message``, secrets removed, bounded; a wait is its reason alone."""
    from app.core.errors import WaitingError

    if isinstance(exc, WaitingError) and str(exc):
        text_ = str(exc)
    else:
        text_ = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    text_ = redact(text_) or ""
    return text_ if len(text_) <= MAX_ERROR else text_[: MAX_ERROR - 1] + "…"


def progress_summary(info: dict[str, Any]) -> str:
    """``40% (2/5) sending to guardians``: a progress report as one short line."""

    def num(value: Any) -> str:
        if isinstance(value, float):
            return f"{value:.0f}" if value.is_integer() or value >= 10 else f"{value:.1f}"
        return str(value)

    parts = []
    if info.get("percent") is not None:
        parts.append(f"{info['percent']:.0f}%")
    if info.get("total") is not None:
        parts.append(f"({num(info.get('done', 0))}/{num(info['total'])})")
    if info.get("message"):
        parts.append(str(info["message"])[:200])
    return " ".join(parts) or f"{num(info.get('done', 0))} done"


def bounded_result(value: Any) -> Any:
    """The handler's return value as JSON, replaced by a preview when it is too large."""
    if value is None:
        return None
    # JSON types only (a datetime becomes its text), then nothing jsonb refuses: one NUL, lone
    # surrogate or NaN would fail the whole batch of completions it rides in.
    value = _storable_json(json.loads(json.dumps(value, default=str)))
    encoded = json.dumps(value, ensure_ascii=False)
    if len(encoded.encode()) <= settings.max_result_bytes:
        return value
    return {"truncated": True, "bytes": len(encoded.encode()), "preview": encoded[:1000]}


def _storable_str(text_: str) -> str:
    """``text_`` with NUL and lone surrogates replaced by U+FFFD (a surrogate pair is kept)."""
    text_ = text_.replace("\x00", "\ufffd")
    try:
        text_.encode("utf-8")
    except UnicodeEncodeError:
        text_ = text_.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
    return text_


def _storable_json(value: Any) -> Any:
    if isinstance(value, str):
        return _storable_str(value)
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {_storable_str(k): _storable_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_storable_json(v) for v in value]
    return value
