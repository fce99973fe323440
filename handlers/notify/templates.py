"""Guardian-facing message templates, in Korean, and the formatting they share.

Every template starts with the academy's name in brackets, as Korean academies' notices do,
so a guardian with children at two academies knows who writes.
"""

from __future__ import annotations

import datetime as dt
import string
from dataclasses import dataclass
from zoneinfo import ZoneInfo

from app.handler_api import PermanentError, settings

WEEKDAYS_KO = "월화수목금토일"


@dataclass(frozen=True)
class Template:
    key: str
    subject: str
    body: str

    def fields(self) -> set[str]:
        return {name for text_ in (self.subject, self.body)
                for _, name, _, _ in string.Formatter().parse(text_) if name}


@dataclass(frozen=True)
class Rendered:
    template: str
    subject: str
    body: str


TEMPLATES: dict[str, Template] = {t.key: t for t in (
    Template(
        "attendance.late",
        "[{academy}] {student} 학생 지각 안내",
        "[{academy}] {student} 학생이 {time}에 지각했습니다.",
    ),
    Template(
        "attendance.absent",
        "[{academy}] {student} 학생 결석 안내",
        "[{academy}] {student} 학생이 오늘 {time} {class_name} 수업에 출석하지 않았습니다. "
        "사정이 있으시면 학원으로 연락 부탁드립니다.",
    ),
    Template(
        "billing.reminder",
        "[{academy}] {month} 수강료 납부 안내",
        "[{academy}] {student} 학생의 {month} {class_name} 수강료 {amount}원이 "
        "납부 기한({due})이 지나 아직 미납 상태입니다. 확인 부탁드립니다.",
    ),
    Template(
        "billing.late_fee",
        "[{academy}] {month} 수강료 연체료 안내",
        "[{academy}] {student} 학생의 {month} {class_name} 수강료가 연체되어 연체료 "
        "{late_fee}원이 부과되었습니다. 납부하실 금액은 총 {total}원입니다.",
    ),
    Template(
        "class.schedule_change",
        "[{academy}] {class_name} 수업 일정 변경 안내",
        "[{academy}] {student} 학생이 수강 중인 {class_name} 수업 일정이 변경되었습니다. "
        "{change}",
    ),
    Template(
        "communication.message",
        "[{academy}] {title}",
        "[{academy}] {text}",
    ),
    Template(
        "communication.digest",
        "[{academy}] {date} {student} 학생 학원 소식",
        "[{academy}] {date} {student} 학생의 학원 소식입니다.\n{lines}",
    ),
    Template(
        "student.transfer",
        "[{academy}] {student} 학생 반 변경 안내",
        "[{academy}] {student} 학생의 수강반이 {date}부터 {from_class}에서 {to_class_ro} "
        "변경되었습니다. {schedule}",
    ),
)}


def render(key: str, **values: object) -> Rendered:
    """The template ``key`` filled in; a missing value is a permanent error naming it."""
    try:
        template = TEMPLATES[key]
    except KeyError:
        raise PermanentError(f"no message template {key!r}") from None
    missing = template.fields() - values.keys()
    if missing:
        raise PermanentError(f"template {key!r} needs {', '.join(sorted(missing))}")
    return Rendered(key, template.subject.format(**values), template.body.format(**values))


# --- formatting ---------------------------------------------------------------------------------


def local(moment: dt.datetime) -> dt.datetime:
    """``moment`` in the academy's time zone (naive times are taken as already local)."""
    zone = ZoneInfo(settings.timezone)
    return moment.replace(tzinfo=zone) if moment.tzinfo is None else moment.astimezone(zone)


def time_ko(moment: dt.datetime) -> str:
    """``오후 4시 5분`` style, as guardians read times."""
    t = local(moment)
    half = "오전" if t.hour < 12 else "오후"
    hour = t.hour % 12 or 12
    return f"{half} {hour}시" + (f" {t.minute}분" if t.minute else "")


def date_ko(day: dt.date) -> str:
    """``11월 26일(목)``."""
    return f"{day.month}월 {day.day}일({WEEKDAYS_KO[day.weekday()]})"


def month_ko(month: dt.date) -> str:
    """``2026년 11월``."""
    return f"{month.year}년 {month.month}월"


def with_ro(word: str) -> str:
    """``word`` + 로 or 으로, as Korean wants after a final consonant (ㄹ takes 로)."""
    last = word[-1:] if word else ""
    if "가" <= last <= "힣":
        final = (ord(last) - ord("가")) % 28
        if final and final != 8:  # 8: ㄹ
            return word + "으로"
    return word + "로"


def won(amount: int) -> str:
    """``250,000`` (the template adds 원)."""
    return f"{amount:,}"
