"""Log lines: one per job state change, with job id, tenant, intent and attempt.

``LOG_FORMAT=json`` prints one JSON object per line; secrets never reach either form.
"""

from __future__ import annotations

import json
import logging
import sys

from app.redaction import redact_text
from app.settings import settings

FIELDS = ("job_id", "tenant_id", "intent_key", "attempt")

#: Celery's own per-message lines repeat what jobq.jobs says once per state change, and beat
#: would print one every second for the sweep; they are kept for warnings and errors only.
QUIETER = ("celery.app.trace", "celery.worker.strategy", "celery.beat")


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        tags = " ".join(
            f"{f}={getattr(record, f)}" for f in FIELDS if getattr(record, f, None) is not None
        )
        return redact_text(f"{line} [{tags}]" if tags else line) or ""


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out = {
            "at": self.formatTime(record, "%Y-%m-%dT%H:%M:%S") + f".{int(record.msecs):03d}",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": redact_text(record.getMessage()),
        }
        for f in FIELDS:
            value = getattr(record, f, None)
            if value is not None:
                out[f] = value
        if record.exc_info:
            out["exception"] = redact_text(self.formatException(record.exc_info))
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
