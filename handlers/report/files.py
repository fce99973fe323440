"""Where reports go and how they are written: ``$JOBQ_HOME/reports/<tenant>/<kind>/<name>``,
replaced whole (written aside, then renamed) so a reader never sees half a file, and one
``reports`` row per tenant, kind, period and scope, updated by a rerun."""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import uuid
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, func
from sqlalchemy.dialects.postgresql import insert

from app.handler_api import JobContext, safe_writer, settings
from handlers.models import Report

#: Excel in Korea opens a UTF-8 CSV correctly only with the byte-order mark.
CSV_ENCODING = "utf-8-sig"


def report_dir(tenant_id: str, kind: str) -> Path:
    path = settings.home / "reports" / str(tenant_id) / kind
    path.mkdir(parents=True, exist_ok=True)
    return path


def aside(path: Path, job_id: str) -> Path:
    """Where a run writes ``path`` before renaming it into place."""
    return path.with_name(f".{path.name}.{job_id}.tmp")


def write_csv(path: Path, job_id: str, headings: Sequence[str],
              rows: Iterable[Sequence[Any]]) -> int:
    """Write the CSV aside and move it into place; how many rows it has. Text cells that
    start like a formula get a leading ``'`` (app.core.csv_export)."""
    tmp = aside(path, job_id)
    count = 0
    with open(tmp, "w", encoding=CSV_ENCODING, newline="") as fh:
        writer = safe_writer(fh)  # a name such as =HYPERLINK(...) stays text in Excel
        writer.writerow(headings)
        for row in rows:
            writer.writerow(row)
            count += 1
    os.replace(tmp, path)
    return count


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def save_report(ctx: JobContext, *, kind: str, start: dt.date, end: dt.date, path: Path,
                summary: dict[str, Any], scope: str = "", conn: Connection | None = None) -> str:
    """Insert or replace the ``reports`` row (in the run's session, or ``conn``); its id."""
    job = uuid.UUID(ctx.job_id)
    return str((conn or ctx.session).execute(
        insert(Report)
        .values(tenant_id=uuid.UUID(ctx.tenant_id), kind=kind, period_start=start,
                period_end=end, scope=scope, file_path=str(path), summary=summary, job_id=job)
        .on_conflict_do_update(
            constraint="uq_reports_tenant_id_kind_period_start_period_end_scope",
            set_={"file_path": str(path), "summary": summary, "job_id": job,
                  "created_at": func.now()})
        .returning(Report.id)
    ).scalar_one())


def rate(attended: int, checked: int) -> float | None:
    """Attendance (present or late) as a percentage of the checked, one decimal."""
    return round(100 * attended / checked, 1) if checked else None


def grade_ko(grade: int | None) -> str:
    """``중2`` for 8."""
    if grade is None:
        return ""
    if grade <= 6:
        return f"초{grade}"
    return f"중{grade - 6}" if grade <= 9 else f"고{grade - 9}"
