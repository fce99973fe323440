"""Merging duplicate student records: the duplicate's enrolments, invoices, attendance and
guardians move to the record kept, and the duplicate stays as ``merged`` pointing at it."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import delete, exists, func, select, text, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session, aliased

from app.handler_api import JobContext, PermanentError
from handlers import periods
from handlers.models import AttendanceRecord, Enrolment, Invoice, Student, StudentGuardian
from handlers.student.params import MergeDuplicatesParams

#: Fields the kept record takes from a duplicate when it has none of its own.
FILLED_IN = ("birth_date", "school", "grade", "phone", "email", "joined_on")

_PAIRS = text(
    """
    SELECT a.id, b.id
      FROM students a
      JOIN students b ON b.tenant_id = a.tenant_id AND b.name = a.name AND b.id <> a.id
     WHERE a.tenant_id = CAST(:tenant_id AS uuid)
       AND a.status <> 'merged' AND b.status <> 'merged'
       AND NOT (a.external_ref IS NOT NULL AND b.external_ref IS NOT NULL
                AND a.external_ref <> b.external_ref)
       AND (a.birth_date = b.birth_date
            OR EXISTS (SELECT 1 FROM student_guardians ga
                         JOIN student_guardians gb ON gb.guardian_id = ga.guardian_id
                        WHERE ga.student_id = a.id AND gb.student_id = b.id))
    """
)


def merge_duplicates(ctx: JobContext, params: MergeDuplicatesParams) -> dict[str, Any]:
    """Merge the given duplicates into the record kept, or every group of duplicates found."""
    tenant = uuid.UUID(ctx.tenant_id)
    if params.keep_student_id is not None:
        groups = [(params.keep_student_id, list(params.duplicate_student_ids))]
    else:
        groups = find_duplicates(ctx.session, tenant)
    merges = [_merge(ctx.session, tenant, keep, dups, dry_run=params.dry_run)
              for keep, dups in groups]
    return {"dry_run": params.dry_run, "groups": len(merges),
            "merged": sum(len(m["merged"]) for m in merges), "merges": merges[:50]}


def find_duplicates(session: Session, tenant: uuid.UUID) -> list[tuple[uuid.UUID, list[uuid.UUID]]]:
    """Groups of records of one student: ``(record to keep, the others)``.

    Two records are one student (entered twice: a walk-in registration and a roster import, a
    typo fixed by re-entering) when they share the name and either the birth date or a
    guardian, and do not carry two different student numbers (two numbers mean the academy
    itself counts two students).

    The record kept is the one with a student number, else the oldest.
    """
    parent: dict[uuid.UUID, uuid.UUID] = {}

    def root(x: uuid.UUID) -> uuid.UUID:
        while parent.setdefault(x, x) != x:
            x = parent[x]
        return x

    for a, b in session.execute(_PAIRS, {"tenant_id": str(tenant)}):
        parent[root(a)] = root(b)
    groups: dict[uuid.UUID, list[uuid.UUID]] = {}
    for x in parent:
        groups.setdefault(root(x), []).append(x)
    if not groups:
        return []
    rank = {sid: (ref is None, created, str(sid)) for sid, ref, created in session.execute(
        select(Student.id, Student.external_ref, Student.created_at)
        .where(Student.id.in_(list(parent))))}
    found = []
    for members in groups.values():
        ordered = sorted(members, key=rank.__getitem__)
        found.append((ordered[0], ordered[1:]))
    return sorted(found, key=lambda g: rank[g[0]])


def _merge(s: Session, tenant: uuid.UUID, keep_id: uuid.UUID, dup_ids: list[uuid.UUID], *,
           dry_run: bool) -> dict[str, Any]:
    rows = {st.id: st for st in s.scalars(
        select(Student).where(Student.tenant_id == tenant,
                              Student.id.in_([keep_id, *dup_ids]))
        .order_by(Student.id).with_for_update())}  # one lock order for every merge
    keep = rows.get(keep_id)
    if keep is None:
        raise PermanentError(f"no student {keep_id} in this academy")
    if keep.status == "merged":
        raise PermanentError(f"student {keep.name} ({keep.id}) was itself merged into "
                             f"{keep.merged_into_id}")
    summary: dict[str, Any] = {"kept": str(keep.id), "name": keep.name, "merged": [],
                               "already_merged": []}
    for dup_id in dup_ids:
        dup = rows.get(dup_id)
        if dup is None:
            raise PermanentError(f"no student {dup_id} in this academy")
        if dup.status == "merged":
            if dup.merged_into_id != keep.id:
                raise PermanentError(f"student {dup.name} ({dup.id}) was merged into "
                                     f"{dup.merged_into_id}, not {keep.id}")
            summary["already_merged"].append(str(dup.id))
            continue
        summary["merged"].append(str(dup.id))
        if not dry_run:
            moved = _move(s, tenant, keep, dup)
            for key, n in moved.items():
                summary[key] = summary.get(key, 0) + n
    return summary


def _move(s: Session, tenant: uuid.UUID, keep: Student, dup: Student) -> dict[str, int]:
    today = periods.local_date(periods.now())
    # A class both records are in: the duplicate's place ends (its invoices that bill the same
    # month twice are voided below); every other enrolment simply changes hands.
    keeper_classes = select(Enrolment.class_id).where(Enrolment.student_id == keep.id,
                                                      Enrolment.status == "active")
    doubled = list(s.scalars(
        update(Enrolment)
        .where(Enrolment.student_id == dup.id, Enrolment.status == "active",
               Enrolment.class_id.in_(keeper_classes))
        .values(status="ended", ended_on=today).returning(Enrolment.id)))
    enrolments = s.execute(update(Enrolment).where(Enrolment.student_id == dup.id)
                           .values(student_id=keep.id)).rowcount
    invoices = s.execute(update(Invoice).where(Invoice.student_id == dup.id)
                         .values(student_id=keep.id)).rowcount
    twin = aliased(Invoice)
    voided = s.execute(
        update(Invoice)
        .where(Invoice.enrolment_id.in_(doubled), Invoice.status == "open",
               exists().where(twin.student_id == keep.id, twin.class_id == Invoice.class_id,
                              twin.month == Invoice.month, twin.id != Invoice.id,
                              twin.status != "void"))
        .values(status="void")).rowcount if doubled else 0
    # The kept record's own attendance wins where both were marked for one session.
    kept_sessions = select(AttendanceRecord.session_id).where(
        AttendanceRecord.student_id == keep.id)
    attendance = s.execute(
        update(AttendanceRecord)
        .where(AttendanceRecord.student_id == dup.id,
               AttendanceRecord.session_id.not_in(kept_sessions))
        .values(student_id=keep.id)).rowcount
    s.execute(delete(AttendanceRecord).where(AttendanceRecord.student_id == dup.id))
    has_primary = s.scalar(select(func.count()).select_from(StudentGuardian).where(
        StudentGuardian.student_id == keep.id, StudentGuardian.is_primary)) > 0
    links = s.execute(select(StudentGuardian).where(StudentGuardian.student_id == dup.id)
                      .order_by(StudentGuardian.is_primary.desc())).scalars().all()
    guardians = 0
    for link in links:
        guardians += s.execute(insert(StudentGuardian).values(
            student_id=keep.id, guardian_id=link.guardian_id, tenant_id=tenant,
            relation=link.relation, is_primary=link.is_primary and not has_primary,
        ).on_conflict_do_nothing()).rowcount
        has_primary = has_primary or link.is_primary
    s.execute(delete(StudentGuardian).where(StudentGuardian.student_id == dup.id))
    for field in FILLED_IN:
        if getattr(keep, field) is None and getattr(dup, field) is not None:
            setattr(keep, field, getattr(dup, field))
    if keep.external_ref is None and dup.external_ref is not None:
        keep_ref, dup.external_ref = dup.external_ref, None
        s.flush()  # the number is unique: off the duplicate before it is on the record kept
        keep.external_ref = keep_ref
    dup.status = "merged"
    dup.merged_into_id = keep.id
    dup.updated_at = keep.updated_at = periods.now()
    s.flush()
    return {"enrolments_moved": enrolments, "enrolments_ended": len(doubled),
            "invoices_moved": invoices, "invoices_voided": voided,
            "attendance_moved": attendance, "guardians_linked": guardians}

