"""Log lines: one per job state change, with job id, tenant, intent and attempt.

``LOG_FORMAT=json`` prints one JSON object per line; secrets never reach either form.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import sys
from zoneinfo import ZoneInfo

from app.core.redaction import redact
from app.core.settings import settings

FIELDS = ("job_id", "tenant_id", "intent_key", "attempt")

#: Celery's own per-message lines repeat what jobq.jobs says once per state change, and beat
#: would print one every second for the sweep; they are kept for warnings and errors only.
QUIETER = ("celery.app.trace", "celery.worker.strategy", "celery.beat")


def _local_time(record: logging.LogRecord, sep: str = " ") -> str:
    """When ``record`` was made, in the academies' zone (as the CLI shows times) with its
    offset, so a line read beside ``jobq job`` or the database's UTC needs no guessing."""
    at = dt.datetime.fromtimestamp(record.created, ZoneInfo(settings.timezone))
    return at.isoformat(sep=sep, timespec="milliseconds")


class TextFormatter(logging.Formatter):
    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        return _local_time(record)

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        tags = " ".join(
            f"{f}={getattr(record, f)}" for f in FIELDS if getattr(record, f, None) is not None
        )
        return redact(f"{line} [{tags}]" if tags else line) or ""


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out = {
            "at": _local_time(record, "T"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": redact(record.getMessage()),
        }
        for f in FIELDS:
            value = getattr(record, f, None)
            if value is not None:
                out[f] = value
        if record.exc_info:
            out["exception"] = redact(self.formatException(record.exc_info))
        return json.dumps(out, ensure_ascii=False, default=str)


def configure_logging(level: str | int | None = None) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if settings.log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(
            TextFormatter("[%(asctime)s: %(levelname)s/%(processName)s] %(name)s: %(message)s")
        )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level or settings.log_level)
    if root.level > logging.DEBUG:
        for name in QUIETER:
            logging.getLogger(name).setLevel(logging.WARNING)
