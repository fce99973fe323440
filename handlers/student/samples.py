"""Sample ``student.*`` requests for the demo academy (``jobq demo`` dispatches them): a small
roster pasted inline with one bad row, a class transfer, and dry runs of the two bulk changes."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import text
from sqlalchemy.orm import Session

#: Two new students and one row the import reports (a grade that does not exist).
ROSTER = (
    "학번,이름,생년월일,학교,학년,보호자,보호자 연락처,관계,반\n"
    "DEMO-NEW-01,신예준,2013-05-14,한빛중학교,중1,김수정,010-7001-1001,모,중등 수학 A반\n"
    "DEMO-NEW-02,문서아,2011-09-02,대청중학교,중3,문태호,010-7001-1002,부,중등 영어 A반\n"
    "DEMO-NEW-03,표지안,2012-01-20,한빛중학교,중5,표은주,010-7001-1003,모,\n"
)

# A student of a class with a same-subject class that still has room, not already in it.
_TRANSFER = text(
    """
    SELECT e.student_id, e.class_id AS from_id, b.id AS to_id
      FROM enrolments e
      JOIN classes a ON a.id = e.class_id
      JOIN classes b ON b.tenant_id = a.tenant_id AND b.subject = a.subject AND b.id <> a.id
                    AND b.status = 'active'
     WHERE e.tenant_id = CAST(:t AS uuid) AND e.status = 'active'
       AND (b.capacity IS NULL OR b.capacity > (SELECT count(*) FROM enrolments x
                                                 WHERE x.class_id = b.id AND x.status = 'active'))
       AND NOT EXISTS (SELECT 1 FROM enrolments y WHERE y.student_id = e.student_id
                          AND y.class_id = b.id AND y.status = 'active')
     ORDER BY e.created_at, e.id
     LIMIT 1
    """
)


def sample_requests(session: Session, tenant_id: str) -> list[tuple[str, dict[str, Any]]]:
    samples: list[tuple[str, dict[str, Any]]] = [
        ("student.exec.import_roster", {"csv_text": ROSTER}),
        ("student.exec.deactivate_graduates", {"dry_run": True}),
        ("student.exec.merge_duplicates", {"dry_run": True}),
    ]
    move = session.execute(_TRANSFER, {"t": str(uuid.UUID(str(tenant_id)))}).first()
    if move is not None:
        samples.append(("student.exec.transfer_class", {
            "student_id": str(move.student_id), "from_class_id": str(move.from_id),
            "to_class_id": str(move.to_id)}))
    return samples
