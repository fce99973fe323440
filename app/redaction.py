"""Keep secrets out of logs, events, errors and Flower.

Two kinds: passwords and tokens inside text (a database URL in an error message, a bearer
token in a header dump), and parameter fields an intent declares secret in the manifest.
"""

from __future__ import annotations

import re
from typing import Any

REDACTED = "***"

_PATTERNS = [
    # scheme://user:password@host -> scheme://user:***@host
    (re.compile(r"(?P<pre>[a-zA-Z][a-zA-Z0-9+.-]*://[^:/@\s]*:)(?P<secret>[^@\s/]+)(?P<post>@)"),
     r"\g<pre>" + REDACTED + r"\g<post>"),
    # password=..., token: ..., api_key=..., secret=... (query strings, key=value dumps)
    (re.compile(
        r"(?i)(?P<pre>\b(?:password|passwd|pwd|token|secret|api[_-]?key|access[_-]?key)"
        r"['\"]?\s*[=:]\s*['\"]?)(?P<secret>[^\s'\"&,;}]+)"),
     r"\g<pre>" + REDACTED),
    # Authorization: Bearer xxx / Basic xxx
    (re.compile(r"(?i)(?P<pre>\b(?:bearer|basic)\s+)(?P<secret>[A-Za-z0-9._~+/=-]{8,})"),
     r"\g<pre>" + REDACTED),
]

#: Parameter names that are secret whatever the manifest says.
_SECRET_NAMES = re.compile(r"(?i)(password|passwd|secret|token|api[_-]?key|credential)")


def redact_text(value: str | None) -> str | None:
    """``value`` with passwords in URLs and key=value secrets replaced by ``***``."""
    if not value:
        return value
    for pattern, replacement in _PATTERNS:
        value = pattern.sub(replacement, value)
    return value


def redact_params(params: Any, secret_fields: tuple[str, ...] | list[str] = ()) -> Any:
    """A copy of ``params`` with the declared secret fields (and secret-looking keys) hidden."""
    if isinstance(params, dict):
        out = {}
        for key, value in params.items():
            if key in secret_fields or (isinstance(key, str) and _SECRET_NAMES.search(key)):
                out[key] = REDACTED
            else:
                out[key] = redact_params(value, secret_fields)
        return out
    if isinstance(params, list):
        return [redact_params(v, secret_fields) for v in params]
    return params
