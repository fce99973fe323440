"""A realistic demo academy for one tenant: a term, classes with weekly timetables, a few hundred
students with their guardians (Korean names), enrolments, sessions, attendance history, invoices
and payments, so that every intent has something to work on.

Idempotent: every row has a natural key and is written with ``ON CONFLICT DO NOTHING``, and the
random choices are seeded by the tenant, so a second run adds only what time has added (the
attendance of sessions that ended since, the invoices of a new month).
"""

from __future__ import annotations

import datetime as dt
import random
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select, text, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from handlers import periods
from handlers.billing.settlement import create_invoices
from handlers.classes.schedule import sessions_from_timetable
from handlers.models import (
    AcademyClass,
    AttendanceRecord,
    ClassSession,
    Enrolment,
    Guardian,
    Invoice,
    Payment,
    Student,
    StudentGuardian,
    Term,
    TimetableSlot,
)

SURNAMES = "김김김이이이박박최정강조윤장임한오서신권황안송전홍"
GIVEN_NAMES = (
    "민준", "서준", "도윤", "예준", "시우", "하준", "주원", "지호", "지후", "준우", "서연", "서윤", "지우", "서현", "민서",
    "하은", "하윤", "윤서", "지유", "지민", "채원", "수아", "지아", "은서", "다은", "예은", "수빈", "유진", "현우", "건우",
    "우진", "선우", "민재", "현준", "연우", "유준", "정우", "승우", "승현", "시윤", "준혁", "은우", "지환", "승민", "지훈",
    "유나", "소율", "예린", "가은", "태윤", "하린", "나은", "도현", "이준",
)
MOTHER_NAMES = (
    "지영", "은정", "미영", "수진", "현정", "정은", "선영", "은주", "혜진", "미정", "지은", "윤정", "수정", "소영", "민정",
)
FATHER_NAMES = (
    "성호", "정훈", "영수", "상철", "준호", "동현", "재훈", "성민", "현석", "민수", "태호", "진우", "석진", "종민", "대현",
)
SCHOOLS = {range(3, 7): ("서울초등학교", "한빛초등학교", "대치초등학교"),
           range(7, 10): ("한빛중학교", "대청중학교", "숙명여자중학교"),
           range(10, 13): ("경기고등학교", "휘문고등학교", "숙명여자고등학교")}

MON, TUE, WED, THU, FRI, SAT = range(6)


@dataclass(frozen=True)
class ClassSpec:
    name: str
    subject: str
    teacher: str
    room: str
    fee: int
    grades: range
    weekdays: tuple[int, ...]
    start: dt.time
    end: dt.time


CLASSES = (
    ClassSpec("초등 수학 A반", "수학", "이지은", "101호", 180_000, range(3, 5), (MON, WED),
              dt.time(15, 0), dt.time(16, 30)),
    ClassSpec("초등 수학 B반", "수학", "이지은", "101호", 190_000, range(5, 7), (TUE, THU),
              dt.time(15, 0), dt.time(16, 30)),
    ClassSpec("초등 영어 A반", "영어", "박소연", "102호", 180_000, range(3, 5), (TUE, THU),
              dt.time(15, 0), dt.time(16, 30)),
    ClassSpec("초등 영어 B반", "영어", "박소연", "102호", 190_000, range(5, 7), (MON, WED),
              dt.time(15, 0), dt.time(16, 30)),
    ClassSpec("중등 수학 A반", "수학", "최민호", "201호", 250_000, range(7, 8), (MON, WED, FRI),
              dt.time(17, 0), dt.time(18, 30)),
    ClassSpec("중등 수학 B반", "수학", "최민호", "201호", 270_000, range(8, 10), (TUE, THU),
              dt.time(17, 0), dt.time(19, 0)),
    ClassSpec("중등 영어 A반", "영어", "정하나", "202호", 250_000, range(7, 9), (TUE, THU),
              dt.time(17, 0), dt.time(18, 30)),
    ClassSpec("중등 과학 A반", "과학", "강태준", "203호", 260_000, range(8, 10), (MON, WED),
              dt.time(19, 0), dt.time(20, 30)),
    ClassSpec("중등 국어 A반", "국어", "윤서진", "204호", 240_000, range(7, 10), (FRI,),
              dt.time(17, 0), dt.time(19, 30)),
    ClassSpec("고등 수학 A반", "수학", "한재석", "301호", 320_000, range(10, 11), (TUE, THU),
              dt.time(19, 0), dt.time(21, 30)),
    ClassSpec("고등 수학 B반", "수학", "한재석", "301호", 350_000, range(11, 13), (MON, WED),
              dt.time(19, 30), dt.time(22, 0)),
    ClassSpec("고등 영어 A반", "영어", "오유리", "302호", 330_000, range(10, 13), (SAT,),
              dt.time(10, 0), dt.time(13, 0)),
)

#: Attendance of a held session, by share.
ATTENDANCE_MIX = (("present", 88), ("late", 6), ("absent", 5), ("excused", 1))
#: Share of invoices paid: those of past months, and of the current month.
PAID_PAST, PAID_CURRENT = 93, 60


@dataclass(frozen=True)
class DemoAcademy:
    tenant_id: str
    term: str
    classes: int
    students: int
    guardians: int
    enrolments: int
    sessions: int
    attendance_records: int
    invoices: int
    open_invoices: int

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def create_demo_academy(session: Session, tenant_id: str, *, students: int = 300,
                        today: dt.date | None = None) -> DemoAcademy:
    """Create (or complete) the demo academy of ``tenant_id`` in ``session``; the caller commits."""
    tenant = uuid.UUID(str(tenant_id))
    today = today or periods.local_date(periods.now())
    rng = random.Random(f"jobq-demo:{tenant}")
    term = _term(session, tenant, today)
    classes = _classes(session, tenant, term)
    student_ids = _students_and_guardians(session, tenant, rng, students)
    first_month = periods.month_start(term.starts_on)
    _enrolments(session, tenant, rng, student_ids, classes, first_month)
    class_rows = session.scalars(select(AcademyClass).where(
        AcademyClass.tenant_id == tenant, AcademyClass.status == "active",
        AcademyClass.id.in_([c.id for c in classes.values()]))).all()
    sessions_from_timetable(session, str(tenant), class_rows, term.starts_on, term.ends_on,
                            term.id)
    _attendance_history(session, tenant)
    month = first_month
    while month <= periods.month_start(today):
        create_invoices(session, str(tenant), month)
        month = periods.next_month(month)
    _payments(session, tenant, periods.month_start(today))
    return _summary(session, tenant, term)


def sample_requests(session: Session, tenant_id: str) -> list[tuple[str, dict[str, Any]]]:
    """One request per intent worth trying on the demo academy: ``(intent_key, params)``.

    ``jobq demo`` dispatches those whose intent is in the manifest.
    """
    tenant = uuid.UUID(str(tenant_id))
    now = periods.now()
    last_session = session.scalar(
        select(ClassSession).where(ClassSession.tenant_id == tenant, ClassSession.ends_at < now,
                                   ClassSession.status != "cancelled")
        .order_by(ClassSession.starts_at.desc()).limit(1))
    next_session = session.scalar(
        select(ClassSession).where(ClassSession.tenant_id == tenant,
                                   ClassSession.starts_at > now,
                                   ClassSession.status == "scheduled")
        .order_by(ClassSession.starts_at).limit(1))
    late = session.execute(
        select(AttendanceRecord.student_id, AttendanceRecord.session_id,
               AttendanceRecord.checked_at)
        .where(AttendanceRecord.tenant_id == tenant, AttendanceRecord.status == "late")
        .order_by(AttendanceRecord.checked_at.desc()).limit(1)).first()
    term = session.scalar(select(Term).where(Term.tenant_id == tenant, Term.status == "active")
                          .order_by(Term.starts_on.desc()).limit(1))
    yesterday = periods.local_date(now) - dt.timedelta(days=1)
    samples: list[tuple[str, dict[str, Any]]] = [
        ("attendance.exec.daily_summary", {"date": yesterday.isoformat()}),
        ("billing.exec.monthly_settlement", {}),
        ("billing.exec.payment_reminders", {}),
    ]
    if late is not None:
        samples.append(("attendance.exec.notify_guardians_late", {
            "student_id": str(late.student_id), "session_id": str(late.session_id),
            "notify_time": late.checked_at.isoformat()}))
    if last_session is not None:
        samples.append(("attendance.exec.notify_absentees", {"session_id": str(last_session.id)}))
    if term is not None:
        samples.append(("class.exec.generate_term_sessions", {"term_id": str(term.id)}))
    if next_session is not None:
        samples.append(("class.exec.notify_schedule_change", {
            "class_id": str(next_session.class_id),
            "message": "다음 수업은 강의실 공사로 3층 301호에서 진행합니다."}))
    return samples


def try_it(session: Session, tenant_id: str, tenant_name: str, jobq: str = "jobq"
           ) -> tuple[list[tuple[str, str]], str]:
    """A few students to try intents on, ``(id, name)``, and a command ready to paste that
    tells the first one's guardians the student arrived late just now (``jobq``: how the
    person reading it calls jobq)."""
    tenant = uuid.UUID(str(tenant_id))
    students = [(str(i), name) for i, name in session.execute(
        select(Student.id, Student.name).where(Student.tenant_id == tenant,
                                               Student.status == "active")
        .order_by(Student.name).limit(3))]
    if not students:
        return [], ""
    now = periods.now().astimezone(periods.zone()).replace(microsecond=0)
    command = (f'{jobq} dispatch attendance.exec.notify_guardians_late --tenant "{tenant_name}" '
               f"-p student_id={students[0][0]} -p notify_time={now.isoformat()} --wait")
    return students, command


# --- the parts ------------------------------------------------------------------------------------


def _season(day: dt.date) -> tuple[int, str]:
    if day.month in (1, 2):
        return day.year - 1, "겨울"
    return day.year, {3: "봄", 4: "봄", 5: "봄", 6: "여름", 7: "여름", 8: "여름", 9: "가을",
                      10: "가을", 11: "가을", 12: "겨울"}[day.month]


def _term(session: Session, tenant: uuid.UUID, today: dt.date) -> Term:
    """The running term: begun on a Monday six weeks ago (history), sixteen weeks long."""
    start = today - dt.timedelta(weeks=6)
    start -= dt.timedelta(days=start.weekday())
    year, season = _season(start)
    name = f"{year}년 {season}학기"
    session.execute(insert(Term).values(
        tenant_id=tenant, name=name, starts_on=start,
        ends_on=start + dt.timedelta(weeks=16, days=-1), status="active",
    ).on_conflict_do_nothing(index_elements=["tenant_id", "name"]))
    return session.scalars(select(Term).where(Term.tenant_id == tenant, Term.name == name)).one()


def _classes(session: Session, tenant: uuid.UUID, term: Term) -> dict[str, AcademyClass]:
    session.execute(insert(AcademyClass).values([
        {"tenant_id": tenant, "term_id": term.id, "name": c.name, "subject": c.subject,
         "teacher": c.teacher, "room": c.room, "capacity": 40, "monthly_fee": c.fee}
        for c in CLASSES
    ]).on_conflict_do_nothing(index_elements=["tenant_id", "name"]))
    found = {c.name: c for c in session.scalars(select(AcademyClass).where(
        AcademyClass.tenant_id == tenant, AcademyClass.name.in_([c.name for c in CLASSES])))}
    session.execute(insert(TimetableSlot).values([
        {"tenant_id": tenant, "class_id": found[c.name].id, "weekday": day, "starts_at": c.start,
         "ends_at": c.end, "room": c.room}
        for c in CLASSES for day in c.weekdays
    ]).on_conflict_do_nothing(index_elements=["class_id", "weekday", "starts_at"]))
    return found


def _students_and_guardians(session: Session, tenant: uuid.UUID, rng: random.Random,
                            count: int) -> dict[str, tuple[uuid.UUID, int]]:
    """external_ref -> (student id, grade)."""
    students, guardians, links = [], {}, []
    family: tuple[str, str, str | None] | None = None  # surname, mother's phone, father's
    for i in range(1, count + 1):
        # About one student in eight is the younger sibling of the one before.
        if family is None or rng.random() > 0.12:
            surname = rng.choice(SURNAMES)
            mother_phone = f"010-{2000 + i:04d}-{rng.randint(1000, 9999)}"
            father_phone = (f"010-{6000 + i:04d}-{rng.randint(1000, 9999)}"
                            if rng.random() < 0.35 else None)
            family = (surname, mother_phone, father_phone)
            mother_surname = rng.choice(SURNAMES)
            channel = rng.choices(("kakao", "sms", "email"), (75, 15, 10))[0]
            guardians[mother_phone] = {
                "tenant_id": tenant, "name": mother_surname + rng.choice(MOTHER_NAMES),
                "phone": mother_phone, "email": f"parent{i:04d}@example.com",
                "kakao_id": None, "preferred_channel": channel}
            if father_phone:
                guardians[father_phone] = {
                    "tenant_id": tenant, "name": surname + rng.choice(FATHER_NAMES),
                    "phone": father_phone, "email": None, "kakao_id": None,
                    "preferred_channel": "kakao"}
        surname, mother_phone, father_phone = family
        grade = rng.randint(3, 12)
        school = next(rng.choice(names) for grades, names in SCHOOLS.items() if grade in grades)
        ref = f"DEMO-{i:04d}"
        students.append({
            "tenant_id": tenant, "external_ref": ref, "name": surname + rng.choice(GIVEN_NAMES),
            "grade": grade, "school": school,
            "birth_date": dt.date(2026 - 6 - grade, rng.randint(1, 12), rng.randint(1, 28)),
            "joined_on": dt.date(2026, 1, 1) - dt.timedelta(days=rng.randint(0, 700)),
        })
        links.append((ref, mother_phone, "모", True))
        if father_phone:
            links.append((ref, father_phone, "부", False))
    _insert(session, Student, students, index_elements=["tenant_id", "external_ref"],
            index_where=text("external_ref IS NOT NULL"))
    _insert(session, Guardian, list(guardians.values()), index_elements=["tenant_id", "phone"],
            index_where=text("phone IS NOT NULL"))
    by_ref = {ref: (sid, grade) for ref, sid, grade in session.execute(
        select(Student.external_ref, Student.id, Student.grade).where(
            Student.tenant_id == tenant, Student.external_ref.like("DEMO-%")))}
    by_phone = dict(session.execute(select(Guardian.phone, Guardian.id).where(
        Guardian.tenant_id == tenant, Guardian.phone.in_(list(guardians)))).all())
    _insert(session, StudentGuardian, [
        {"student_id": by_ref[ref][0], "guardian_id": by_phone[phone], "tenant_id": tenant,
         "relation": relation, "is_primary": primary}
        for ref, phone, relation, primary in links if ref in by_ref and phone in by_phone
    ], index_elements=["student_id", "guardian_id"])
    return by_ref


def _enrolments(session: Session, tenant: uuid.UUID, rng: random.Random,
                students: dict[str, tuple[uuid.UUID, int]], classes: dict[str, AcademyClass],
                first_month: dt.date) -> None:
    # Only students with no enrolment at all: a rerun must not undo a transfer or an ending.
    known = set(session.scalars(select(Enrolment.student_id).where(Enrolment.tenant_id == tenant)))
    rows = []
    for ref in sorted(students):
        student_id, grade = students[ref]
        fitting = [c for c in CLASSES if grade in c.grades]
        if student_id in known:
            rng.random()  # keep the sequence, so the others choose as on the first run
            continue
        by_subject: dict[str, list[ClassSpec]] = {}
        for c in fitting:
            by_subject.setdefault(c.subject, []).append(c)
        subjects = sorted(by_subject)
        chosen = rng.sample(subjects, k=min(len(subjects), rng.choice((1, 1, 2, 2, 3))))
        for subject in chosen:
            spec = rng.choice(by_subject[subject])
            rows.append({"tenant_id": tenant, "student_id": student_id,
                         "class_id": classes[spec.name].id, "status": "active",
                         "started_on": first_month,
                         # Siblings and scholarship students pay less, now and then.
                         "monthly_fee": spec.fee - 20_000 if rng.random() < 0.08 else None})
    _insert(session, Enrolment, rows, index_elements=["student_id", "class_id"],
            index_where=text("status = 'active'"))


def _attendance_history(session: Session, tenant: uuid.UUID) -> None:
    """Attendance of every session that has ended and is not closed yet, then close it."""
    now = periods.now()
    ended = session.execute(
        select(ClassSession.id, ClassSession.class_id, ClassSession.starts_at)
        .where(ClassSession.tenant_id == tenant, ClassSession.ends_at < now,
               ClassSession.status == "scheduled", ClassSession.attendance_closed_at.is_(None))
    ).all()
    if not ended:
        return
    enrolled: dict[uuid.UUID, list[uuid.UUID]] = {}
    for class_id, student_id in session.execute(
            select(Enrolment.class_id, Enrolment.student_id)
            .where(Enrolment.tenant_id == tenant, Enrolment.status == "active")):
        enrolled.setdefault(class_id, []).append(student_id)
    statuses, weights = zip(*ATTENDANCE_MIX, strict=True)
    rows = []
    for session_id, class_id, starts_at in ended:
        # Seeded by the session, so the history of a session is the same whoever writes it.
        rng = random.Random(str(session_id))
        for student_id in enrolled.get(class_id, []):
            status = rng.choices(statuses, weights)[0]
            minutes = {"present": -rng.randint(0, 10), "late": rng.randint(5, 40)}.get(status, 0)
            rows.append({"tenant_id": tenant, "session_id": session_id, "student_id": student_id,
                         "status": status, "source": "kiosk" if status in ("present", "late")
                         else "staff",
                         "checked_at": starts_at + dt.timedelta(minutes=minutes)})
    _insert(session, AttendanceRecord, rows, index_elements=["session_id", "student_id"])
    session.execute(update(ClassSession)
                    .where(ClassSession.id.in_([s.id for s in ended]))
                    .values(status="held", attendance_closed_at=now))


def _payments(session: Session, tenant: uuid.UUID, current_month: dt.date) -> None:
    """Pay most invoices, chosen by their id, so a rerun chooses the same ones."""
    open_invoices = session.execute(
        select(Invoice.id, Invoice.month, Invoice.amount, Invoice.due_on)
        .where(Invoice.tenant_id == tenant, Invoice.status == "open")).all()
    paid = []
    latest = periods.now() - dt.timedelta(hours=1)
    for invoice_id, month, amount, due_on in open_invoices:
        share = PAID_CURRENT if month >= current_month else PAID_PAST
        if invoice_id.int % 100 < share:
            paid_at = min(latest, periods.at_local(
                due_on - dt.timedelta(days=invoice_id.int % 9),
                dt.time(10 + invoice_id.int % 9, invoice_id.int % 60)))
            paid.append({"tenant_id": tenant, "invoice_id": invoice_id, "amount": amount,
                         "paid_at": paid_at, "method": ("card", "transfer")[invoice_id.int % 2],
                         "source": "manual", "provider_payment_id": f"demo:{invoice_id}"})
    _insert(session, Payment, paid, index_elements=["tenant_id", "provider_payment_id"])
    if paid:
        session.execute(
            update(Invoice).where(Invoice.id.in_([p["invoice_id"] for p in paid]))
            .values(status="paid",
                    paid_at=select(func.max(Payment.paid_at))
                    .where(Payment.invoice_id == Invoice.id).scalar_subquery()))


def _insert(session: Session, model: type, rows: Sequence[dict[str, Any]], **conflict: Any) -> None:
    for start in range(0, len(rows), 1000):
        session.execute(insert(model).values(list(rows[start:start + 1000]))
                        .on_conflict_do_nothing(**conflict))


def _summary(session: Session, tenant: uuid.UUID, term: Term) -> DemoAcademy:
    def count(model: Any, *where: Any) -> int:
        return session.scalar(select(func.count()).select_from(model)
                              .where(model.tenant_id == tenant, *where)) or 0

    return DemoAcademy(
        tenant_id=str(tenant), term=term.name, classes=count(AcademyClass),
        students=count(Student), guardians=count(Guardian), enrolments=count(Enrolment),
        sessions=count(ClassSession), attendance_records=count(AttendanceRecord),
        invoices=count(Invoice), open_invoices=count(Invoice, Invoice.status == "open"),
    )
