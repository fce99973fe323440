"""Sample ``report.*`` requests for the demo academy (``jobq demo`` dispatches them): last
week's attendance, last month's billing, one student's progress, and the academy's export."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from handlers.models import Student


def sample_requests(session: Session, tenant_id: str) -> list[tuple[str, dict[str, Any]]]:
    samples: list[tuple[str, dict[str, Any]]] = [
        ("report.exec.weekly_attendance", {}),
        ("report.exec.monthly_billing", {}),
        ("report.exec.export_tenant_data", {}),
    ]
    student = session.scalar(select(Student.id).where(
        Student.tenant_id == uuid.UUID(str(tenant_id)), Student.status == "active")
        .order_by(Student.external_ref).limit(1))
    if student is not None:
        samples.append(("report.exec.student_progress", {"student_id": str(student)}))
    return samples
