"""Sample ``communication.*`` requests for the demo academy (``jobq demo`` dispatches them): a
broadcast to every guardian, one message, yesterday's digest, and a retry of failed messages."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from handlers import periods
from handlers.models import Student


def sample_requests(session: Session, tenant_id: str) -> list[tuple[str, dict[str, Any]]]:
    yesterday = periods.local_date(periods.now()) - dt.timedelta(days=1)
    samples: list[tuple[str, dict[str, Any]]] = [
        ("communication.exec.broadcast", {
            "title": "개교기념일 휴원 안내",
            "message": "다음 주 월요일은 개교기념일로 휴원합니다. 보강 일정은 따로 안내드리겠습니다.",
            "chunk_size": 100}),
        ("communication.exec.daily_digest", {"date": yesterday.isoformat()}),
        ("communication.exec.retry_failed_deliveries", {}),
    ]
    student = session.scalar(select(Student.id).where(
        Student.tenant_id == uuid.UUID(str(tenant_id)), Student.status == "active")
        .order_by(Student.external_ref).limit(1))
    if student is not None:
        samples.append(("communication.exec.send_message", {
            "student_id": str(student), "title": "상담 안내",
            "message": "이번 주 금요일 오후 4시에 학부모 상담이 있습니다."}))
    return samples
