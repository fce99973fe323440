"""Who to reach about a student, and how: the guardians, their channel and address.

A guardian is reached on the channel they prefer when it has an address, else on whatever
address they have (phone first: KakaoTalk and SMS reach more guardians than e-mail does).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.handler_api import Tenant
from handlers.models import Guardian, Student, StudentGuardian
from handlers.notify.sending import Outgoing
from handlers.notify.templates import render


@dataclass(frozen=True)
class Contact:
    student_id: str
    student_name: str
    guardian_id: str
    guardian_name: str
    channel: str
    address: str | None

    def notice(self, template: str, *, topic: str | None = None, **values: object) -> Outgoing:
        """A message about this contact's student, rendered from ``template``.

        ``topic`` (e.g. ``invoice:<id>``) tells apart several notices of one job about the same
        student, which would otherwise share the recipient key and be sent only once.
        """
        rendered = render(template, student=self.student_name, **values)
        recipient = f"{self.guardian_id}:{self.student_id}" + (f":{topic}" if topic else "")
        return Outgoing(recipient=recipient, channel=self.channel,
                        address=self.address, rendered=rendered,
                        guardian_id=self.guardian_id, student_id=self.student_id)


def academy_name(session: Session, tenant_id: str) -> str:
    return session.scalar(select(Tenant.name).where(Tenant.id == uuid.UUID(str(tenant_id)))) or ""


def channel_and_address(g: Guardian) -> tuple[str, str | None]:
    by_channel = {"kakao": g.kakao_id or g.phone, "sms": g.phone, "email": g.email}
    if by_channel.get(g.preferred_channel):
        return g.preferred_channel, by_channel[g.preferred_channel]
    for channel in ("kakao", "sms", "email"):
        if by_channel[channel]:
            return channel, by_channel[channel]
    return g.preferred_channel, None


def guardians_of(session: Session, tenant_id: str, student_ids: Iterable[uuid.UUID | str], *,
                 primary_only: bool = True) -> list[Contact]:
    """The guardians of these students, one :class:`Contact` per guardian and student."""
    ids = [uuid.UUID(str(s)) for s in student_ids]
    if not ids:
        return []
    query = (
        select(Student.id, Student.name, Guardian)
        .join(StudentGuardian, StudentGuardian.student_id == Student.id)
        .join(Guardian, Guardian.id == StudentGuardian.guardian_id)
        .where(Student.tenant_id == uuid.UUID(str(tenant_id)), Student.id.in_(ids))
        .order_by(Student.name, Guardian.name)
    )
    if primary_only:
        query = query.where(StudentGuardian.is_primary)
    contacts = []
    for student_id, student_name, guardian in session.execute(query):
        channel, address = channel_and_address(guardian)
        contacts.append(Contact(str(student_id), student_name, str(guardian.id), guardian.name,
                                channel, address))
    return contacts
