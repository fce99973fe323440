"""Keep secrets out of logs, events, errors and Flower.

Two kinds: passwords and tokens inside text (a database URL in an error message, a bearer
token in a header dump), and parameter fields an intent declares secret in the manifest.
"""

from __future__ import annotations

import re
from typing import Any

REDACTED = "***"

# Linear in the text's length, whatever it holds: redaction runs over every log line, error and
# parameter, and a pattern that rescans from each position (a megabyte key without "://")
# would hang the caller. Hence the lookbehind (a scheme starts where a word does) and bounds.
_PATTERNS = [
    # scheme://user:password@host -> scheme://user:***@host
    (re.compile(r"(?P<pre>(?<![a-zA-Z0-9+.-])[a-zA-Z][a-zA-Z0-9+.-]{0,31}://[^:/@\s]{0,256}:)"
                r"(?P<secret>[^@\s/]{1,1024})(?P<post>@)"),
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


def redact(value: str | None) -> str | None:
    """``value`` with passwords in URLs and key=value secrets replaced by ``***``."""
    if not value:
        return value
    for pattern, replacement in _PATTERNS:
        value = pattern.sub(replacement, value)
    return value


def is_secret_field(name: Any, secret_fields: tuple[str, ...] | list[str] = ()) -> bool:
    """True for a field the manifest declares secret, or whose name looks like one."""
    return name in secret_fields or (isinstance(name, str) and bool(_SECRET_NAMES.search(name)))


def redact_params(params: Any, secret_fields: tuple[str, ...] | list[str] = ()) -> Any:
    """A copy of ``params`` with the declared secret fields (and secret-looking keys) hidden,
    and passwords inside text values masked (a database URL typed into any field)."""
    if isinstance(params, dict):
        out = {}
        for key, value in params.items():
            if is_secret_field(key, secret_fields):
                out[key] = REDACTED
            else:
                out[key] = redact_params(value, secret_fields)
        return out
    if isinstance(params, list | tuple):
        return [redact_params(v, secret_fields) for v in params]
    if isinstance(params, str):
        return redact(params)
    return params


def redacted_call(args: Any, kwargs: Any, secret_fields: tuple[str, ...] = ()) -> tuple[str, str]:
    """Celery's ``argsrepr`` and ``kwargsrepr`` of a call (what Flower and events show), with
    :func:`redact_params` applied to every argument."""
    from celery.utils.saferepr import saferepr

    return (saferepr(redact_params(list(args or ()), secret_fields)),
            saferepr(redact_params(dict(kwargs or {}), secret_fields)))
