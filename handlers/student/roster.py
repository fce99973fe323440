"""``student.exec.import_roster``: a roster CSV into students, guardians and enrolments, in
batches that each commit with a checkpoint, bad rows kept with their line and reason."""

from __future__ import annotations

import uuid
from collections import Counter
from pathlib import Path
from typing import Any

from sqlalchemy import func, literal_column, select, text, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from app.handler_api import JobContext, PermanentError, settings
from handlers import periods
from handlers.models import (
    AcademyClass,
    Enrolment,
    Guardian,
    RosterImport,
    RosterImportError,
    Student,
    StudentGuardian,
)
from handlers.student.params import ImportRosterParams
from handlers.student.roster_file import (
    MAX_FILE_BYTES,
    BadRow,
    RosterFileError,
    RosterRow,
    batches,
    parse,
)

UPLOADS = "uploads"
COUNTS = ("created", "updated", "unchanged", "bad", "guardians_created", "enrolments_created")

# Core tables, and statements built once: executed with a list of rows, they are compiled once
# and sent in multi-row batches (an ORM insert of a list compiles anew for each batch size).
STUDENTS = Student.__table__
GUARDIANS = Guardian.__table__
LINKS = StudentGuardian.__table__
ENROLMENTS = Enrolment.__table__


def _upsert_students_statement():
    """Insert a student, or update it when the row says something new; returns whether it was
    inserted (``xmax = 0``) for each row written, nothing for a row left unchanged. An empty
    cell never erases what is known."""
    stmt = insert(STUDENTS)
    x, t = stmt.excluded, STUDENTS.c
    kept = {c: func.coalesce(x[c], t[c])
            for c in ("birth_date", "school", "grade", "phone", "email", "joined_on")}
    return stmt.on_conflict_do_update(
        index_elements=["tenant_id", "external_ref"],
        index_where=text("external_ref IS NOT NULL"),
        set_={"name": x.name, **kept, "updated_at": func.now()},
        where=func.row(t.name, *(t[c] for c in kept)).is_distinct_from(
            func.row(x.name, *kept.values())),
    ).returning(literal_column("xmax = 0"))


_UPSERT_STUDENTS = _upsert_students_statement()


def uploads_dir() -> Path:
    """Where roster files are put for import: ``$JOBQ_HOME/uploads``."""
    return settings.home / UPLOADS


def import_roster(ctx: JobContext, params: ImportRosterParams) -> dict[str, Any]:
    """Import the roster in batches, resuming after the last committed batch.

    The migration scenario: thousands of rows. Each batch commits with a checkpoint (the next
    record's index and the file's hash), so a run that dies resumes after its last whole
    batch. The student number (학번) is the natural key: a row finds its student again, so a
    resumed or repeated import updates instead of duplicating. Bad rows never stop the import:
    each goes to ``roster_import_errors`` with its line number and the reason, in Korean, for
    the person fixing the file; the good rows are imported.
    """
    data, source = _read(params)
    try:
        roster = parse(data, params.encoding)
    except RosterFileError as exc:
        raise PermanentError(f"cannot read the roster ({source}): {exc}") from None
    state = ctx.resume_from or {}
    if state and state.get("sha256") != roster.sha256:
        raise PermanentError(f"the roster ({source}) changed since this import began; "
                             "dispatch a new import for the new file")
    tenant = uuid.UUID(ctx.tenant_id)
    record = _import_row(ctx, source, len(roster.records))
    counts: Counter = Counter()
    for key in COUNTS:  # (Counter addition would drop the zeros)
        counts[key] = int(state.get("counts", {}).get(key, 0))
    start = int(state.get("next", 0))
    if start:
        ctx.log.info("resuming roster import at record %d of %d", start, len(roster.records))
    classes = dict(ctx.session.execute(select(AcademyClass.name, AcademyClass.id).where(
        AcademyClass.tenant_id == tenant, AcademyClass.status == "active")).all())
    today = periods.job_date(ctx)
    total = len(roster.records)
    ctx.progress(start, total, "importing")
    for after, batch in batches(roster.records, params.batch_size, start):
        good = []
        bad = [r for r in batch if isinstance(r, BadRow)]
        for row in batch:
            if isinstance(row, RosterRow):
                if row.class_name and row.class_name not in classes:
                    bad.append(BadRow(row.line, f"반 '{row.class_name}'이(가) 이 학원에 없습니다",
                                      row.raw))
                else:
                    good.append(row)
        counts.update(_import_batch(ctx.session, tenant, good, classes, today))
        counts["bad"] += len(bad)
        _record_bad(ctx.session, tenant, record.id, bad)
        _set_counts(ctx.session, record.id, counts, finished=False)
        # The batch and the place to resume from commit together.
        ctx.checkpoint({"import_id": str(record.id), "next": after, "sha256": roster.sha256,
                        "counts": dict(counts)})
        ctx.progress(after, total, "importing")
    _set_counts(ctx.session, record.id, counts, finished=True)
    return {"import_id": str(record.id), "source": source, "encoding": roster.encoding,
            "rows": total, "resumed_at_row": start or None,
            "ignored_headings": roster.ignored_headings, **dict(counts)}


def _read(params: ImportRosterParams) -> tuple[bytes, str]:
    """The file's bytes and how to name it in messages."""
    if params.csv_text is not None:
        data = params.csv_text.encode()
        return data, f"inline CSV of {len(data):,} bytes"
    assert params.file is not None
    base = uploads_dir().resolve()
    path = (base / params.file).resolve()
    if not path.is_relative_to(base):
        raise PermanentError(f"file {params.file!r} is not under {base}")
    try:
        size = path.stat().st_size
        if size > MAX_FILE_BYTES:
            raise PermanentError(f"file {params.file!r} is {size:,} bytes; the limit is "
                                 f"{MAX_FILE_BYTES:,}")
        return path.read_bytes(), f"file {params.file}"
    except FileNotFoundError:
        raise PermanentError(f"no file {params.file!r} under {base}") from None
    except IsADirectoryError:
        raise PermanentError(f"{params.file!r} is a folder, not a file") from None


def _import_row(ctx: JobContext, source: str, total: int) -> RosterImport:
    ctx.session.execute(insert(RosterImport).values(
        tenant_id=uuid.UUID(ctx.tenant_id), job_id=uuid.UUID(ctx.job_id), source=source,
        rows_total=total).on_conflict_do_nothing(index_elements=["job_id"]))
    return ctx.session.scalars(select(RosterImport).where(
        RosterImport.job_id == uuid.UUID(ctx.job_id))).one()


def _import_batch(s: Session, tenant: uuid.UUID, rows: list[RosterRow],
                  classes: dict[str, uuid.UUID], today) -> Counter:
    counts: Counter = Counter()
    if not rows:
        return counts
    counts.update(_upsert_students(s, tenant, rows))
    students = dict(s.execute(select(Student.external_ref, Student.id).where(
        Student.tenant_id == tenant,
        Student.external_ref.in_([r.external_ref for r in rows]))).all())
    counts["guardians_created"] += _link_guardians(s, tenant, rows, students)
    enrolments = [
        {"tenant_id": tenant, "student_id": students[r.external_ref],
         "class_id": classes[r.class_name], "status": "active", "started_on": today}
        for r in rows if r.class_name
    ]
    if enrolments:
        counts["enrolments_created"] += s.execute(
            insert(ENROLMENTS).on_conflict_do_nothing(
                index_elements=["student_id", "class_id"], index_where=text("status = 'active'"))
            .returning(ENROLMENTS.c.id), enrolments).rowcount
    return counts


def _upsert_students(s: Session, tenant: uuid.UUID, rows: list[RosterRow]) -> Counter:
    """Insert new students, update changed ones; how many of each, and unchanged."""
    values = [{"tenant_id": tenant, "external_ref": r.external_ref, "name": r.name,
               "birth_date": r.birth_date, "school": r.school, "grade": r.grade,
               "phone": r.phone, "email": r.email, "joined_on": r.joined_on} for r in rows]
    changed = [inserted for (inserted,) in s.execute(_UPSERT_STUDENTS, values)]
    created = sum(1 for c in changed if c)
    return Counter(created=created, updated=len(changed) - created,
                   unchanged=len(rows) - len(changed))


def _link_guardians(s: Session, tenant: uuid.UUID, rows: list[RosterRow],
                    students: dict[str, uuid.UUID]) -> int:
    """Find or create each row's guardian (by phone, else e-mail) and link it; how many new."""
    with_guardian = [r for r in rows if r.guardian_phone or r.guardian_email]
    if not with_guardian:
        return 0
    created = 0
    by_phone: dict[str, dict[str, Any]] = {}
    for r in with_guardian:
        if r.guardian_phone:
            by_phone.setdefault(r.guardian_phone, {
                "tenant_id": tenant, "name": r.guardian_name or f"{r.name} 보호자",
                "phone": r.guardian_phone, "email": r.guardian_email,
                "preferred_channel": "kakao"})
    if by_phone:
        created += len(s.execute(
            insert(GUARDIANS).on_conflict_do_nothing(
                index_elements=["tenant_id", "phone"], index_where=text("phone IS NOT NULL"))
            .returning(GUARDIANS.c.id), list(by_phone.values())).all())
    phone_ids = dict(s.execute(select(Guardian.phone, Guardian.id).where(
        Guardian.tenant_id == tenant, Guardian.phone.in_(list(by_phone)))).all())
    guardian_of: dict[str, uuid.UUID] = {}
    for r in with_guardian:
        if r.guardian_phone:
            guardian_of[r.external_ref] = phone_ids[r.guardian_phone]
            continue
        # E-mail only: no unique key to lean on, so look it up (rare, and per row).
        found = s.scalar(select(Guardian.id).where(Guardian.tenant_id == tenant,
                                                   Guardian.phone.is_(None),
                                                   Guardian.email == r.guardian_email).limit(1))
        if found is None:
            found = s.scalar(insert(Guardian).values(
                tenant_id=tenant, name=r.guardian_name or f"{r.name} 보호자",
                email=r.guardian_email, preferred_channel="email").returning(Guardian.id))
            created += 1
        guardian_of[r.external_ref] = found
    student_ids = [students[r.external_ref] for r in with_guardian]
    has_primary = set(s.scalars(select(StudentGuardian.student_id).where(
        StudentGuardian.student_id.in_(student_ids), StudentGuardian.is_primary)))
    links = []
    for r in with_guardian:
        student_id = students[r.external_ref]
        links.append({"student_id": student_id, "guardian_id": guardian_of[r.external_ref],
                      "tenant_id": tenant, "relation": r.guardian_relation,
                      "is_primary": student_id not in has_primary})
        has_primary.add(student_id)
    # RETURNING makes the driver send the rows in multi-row batches, not one statement each.
    s.execute(insert(LINKS).on_conflict_do_nothing().returning(LINKS.c.student_id), links)
    return created


def _record_bad(s: Session, tenant: uuid.UUID, import_id: uuid.UUID, bad: list[BadRow]) -> None:
    if not bad:
        return
    s.execute(insert(RosterImportError.__table__).on_conflict_do_nothing(
        index_elements=["import_id", "line_number"]), [
        {"tenant_id": tenant, "import_id": import_id, "line_number": b.line, "reason": b.reason,
         "raw": b.raw or None}
        for b in bad
    ])


def _set_counts(s: Session, import_id: uuid.UUID, counts: Counter, *, finished: bool) -> None:
    values: dict[str, Any] = {
        "rows_imported": counts["created"] + counts["updated"],
        "rows_unchanged": counts["unchanged"], "rows_bad": counts["bad"],
    }
    if finished:
        values.update(status="completed", finished_at=func.now())
    s.execute(update(RosterImport).where(RosterImport.id == import_id).values(**values))
