"""``report.exec.export_tenant_data``: every table of an academy as CSV (PostgreSQL's ``COPY``)
in one ZIP with a Korean README, read in one snapshot; for an academy that leaves, asks for its
data, or wants its own backup."""

from __future__ import annotations

import datetime as dt
import io
import json
import os
import uuid
import zipfile
from typing import Any

from sqlalchemy import select

import handlers.models  # the domain tables must be in the metadata
from app.handler_api import Base, JobContext, Tenant, safe_text_sql
from handlers import periods
from handlers.report.files import aside, report_dir, save_report, sha256
from handlers.report.params import ExportTenantDataParams

#: What each table holds, for the README (in Korean, for the academy).
DESCRIPTIONS = {
    "students": "학생", "guardians": "보호자", "student_guardians": "학생-보호자 연결",
    "terms": "학기", "classes": "반", "timetable_slots": "반 시간표", "enrolments": "수강 등록",
    "class_sessions": "수업 회차", "attendance_records": "출결 기록", "invoices": "수강료 청구서",
    "payments": "납부 내역", "broadcasts": "단체 안내", "broadcast_chunks": "단체 안내 발송 묶음",
    "notifications": "발송 메시지", "reports": "보고서", "roster_imports": "명단 가져오기",
    "roster_import_errors": "명단 가져오기 오류 행",
}
BOM = "\ufeff".encode()


def tenant_tables() -> list[str]:
    """Every domain table (:mod:`handlers.models`) that belongs to a tenant, sorted by name."""
    return sorted(m.local_table.name for m in Base.registry.mappers
                  if m.class_.__module__ == handlers.models.__name__
                  and "tenant_id" in m.local_table.c)


def export_tenant_data(ctx: JobContext, params: ExportTenantDataParams) -> dict[str, Any]:
    """Write every table of the academy as CSV into one ZIP; one ``tenant_export`` report."""
    tenant = uuid.UUID(ctx.tenant_id)  # also proves it is a UUID before it goes into COPY
    # First use of the session: its transaction starts in one snapshot for every table.
    connection = ctx.session.connection(execution_options={"isolation_level": "REPEATABLE READ"})
    academy = ctx.session.scalars(select(Tenant.name).where(Tenant.id == tenant)).one()
    day = periods.job_date(ctx)
    tables = [t for t in tenant_tables()
              if params.include_notifications or t != "notifications"]
    path = report_dir(ctx.tenant_id, "tenant_export") / f"tenant-export-{day.isoformat()}.zip"
    tmp = aside(path, ctx.job_id)
    counts: dict[str, int] = {}
    isolation = connection.exec_driver_sql("SHOW transaction_isolation").scalar()
    cursor = connection.connection.dbapi_connection.cursor()
    try:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as archive:
            _copy(cursor, archive, "tenant.csv", "tenants", f"id = '{tenant}'")
            for done, table in enumerate(tables):
                ctx.progress(done, len(tables), f"exporting {table}")
                order = ", ".join(c.name for c in Base.metadata.tables[table].primary_key)
                counts[table] = _copy(cursor, archive, f"{table}.csv", table,
                                      f"tenant_id = '{tenant}' ORDER BY {order}")
            archive.writestr("README.txt", _readme(academy, day, counts))
            archive.writestr("manifest.json", json.dumps(
                {"tenant_id": str(tenant), "tenant": academy,
                 "exported_at": periods.now().isoformat(), "tables": counts},
                ensure_ascii=False, indent=2))
        os.replace(tmp, path)
    finally:
        cursor.close()
        if tmp.exists():
            tmp.unlink()
    # The snapshot only read. It ends here, before the engine records the completion: a
    # REPEATABLE READ transaction may not update the job's row, which progress and lease
    # renewals changed meanwhile. The report row goes in a transaction of its own.
    ctx.session.rollback()
    ctx.progress(len(tables), len(tables), "exported")
    summary = {"title": f"{academy} 데이터 내보내기 ({day.isoformat()})",
               "tables": counts, "rows": sum(counts.values()), "bytes": path.stat().st_size,
               "sha256": sha256(path), "isolation": isolation}
    with ctx.journal() as conn:
        report_id = save_report(ctx, kind="tenant_export", start=day, end=day, path=path,
                                summary=summary, conn=conn)
    return {"report_id": report_id, "file": str(path),
            **{k: v for k, v in summary.items() if k != "title"}}


def _copy(cursor, archive: zipfile.ZipFile, name: str, table: str, where: str) -> int:
    """``COPY`` of ``table``'s rows ``where`` as CSV with headings into ``name`` in the
    archive; its row count. Text columns go through :func:`safe_text_sql`: the BOM below makes
    Excel open the file, and a cell such as ``=HYPERLINK(...)`` must stay text there."""
    query = f"SELECT {_columns(cursor, table)} FROM {table} WHERE {where}"
    with archive.open(name, "w") as member:
        member.write(BOM)  # Excel in Korea reads UTF-8 CSV only with it
        counter = _LineCounter(member)
        cursor.copy_expert(f"COPY ({query}) TO STDOUT WITH (FORMAT csv, HEADER true)", counter)
    return cursor.rowcount if cursor.rowcount >= 0 else max(0, counter.lines - 1)


#: PostgreSQL's text types (text, varchar, char(n), "char", name): the columns whose cells
#: are neutralised. Numbers, dates, uuids, booleans and JSON are written as COPY writes them.
TEXT_TYPES = frozenset({25, 1043, 1042, 18, 19})


def _columns(cursor, table: str) -> str:
    """``table``'s columns in their order, its text ones neutralised under their own names."""
    cursor.execute(f"SELECT * FROM {table} LIMIT 0")
    shown = []
    for column in cursor.description:
        name = '"' + column.name.replace('"', '""') + '"'
        shown.append(f"{safe_text_sql(name)} AS {name}" if column.type_code in TEXT_TYPES
                     else name)
    return ", ".join(shown)


class _LineCounter(io.RawIOBase):
    """Passes COPY's output through, counting lines for drivers that report no rowcount."""

    def __init__(self, sink) -> None:
        self.sink = sink
        self.lines = 0

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:
        self.lines += data.count(b"\n") if isinstance(data, bytes) else data.count("\n")
        self.sink.write(data if isinstance(data, bytes) else data.encode())
        return len(data)


def _readme(academy: str, day: dt.date, counts: dict[str, int]) -> str:
    lines = [f"{academy} 데이터 내보내기 ({day.isoformat()})", "",
             "각 파일은 표 하나를 CSV(UTF-8)로 담고 있습니다. 첫 줄은 열 이름입니다.", "",
             "tenant.csv: 학원 정보"]
    lines += [f"{table}.csv: {DESCRIPTIONS.get(table, table)} ({n:,}행)"
              for table, n in counts.items()]
    return "\n".join(lines) + "\n"
