"""Reading a roster CSV as academies keep them (Korean headings, Excel's encodings, ``중2``):
each record becomes a clean :class:`RosterRow` or a :class:`BadRow` with its line and a reason
in Korean. Pure functions of the file's bytes, no database."""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import io
import re
from collections.abc import Iterator
from dataclasses import dataclass, field

#: Each field and the headings it goes by (compared without spaces, case-insensitively).
HEADINGS: dict[str, tuple[str, ...]] = {
    "external_ref": ("학번", "학생번호", "원생번호", "student_no", "external_ref"),
    "name": ("이름", "학생명", "학생이름", "성명", "name"),
    "birth_date": ("생년월일", "birth_date"),
    "school": ("학교", "school"),
    "grade": ("학년", "grade"),
    "phone": ("학생연락처", "학생전화", "학생휴대폰", "student_phone", "phone"),
    "email": ("학생이메일", "email"),
    "guardian_name": ("보호자", "보호자명", "보호자이름", "학부모", "학부모명", "guardian_name"),
    "guardian_phone": ("보호자연락처", "보호자전화", "학부모연락처", "guardian_phone"),
    "guardian_relation": ("관계", "보호자관계", "guardian_relation"),
    "guardian_email": ("보호자이메일", "학부모이메일", "guardian_email"),
    "class_name": ("반", "수강반", "class", "class_name"),
    "joined_on": ("등록일", "입원일", "joined_on"),
}
REQUIRED = ("external_ref", "name")
#: The heading a field is named by in reasons.
LABELS = {name: aliases[0] for name, aliases in HEADINGS.items()}
MAX_FILE_BYTES = 50 * 1024 * 1024
MAX_RAW = 1000

_EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")
_GRADE = re.compile(r"(초|중|고)?(?:등학교|등|학교)?(\d{1,2})(?:학년)?")
_GRADE_OFFSET = {None: 0, "초": 0, "중": 6, "고": 9}
_GRADE_RANGE = {None: range(1, 13), "초": range(1, 7), "중": range(1, 4), "고": range(1, 4)}


class RosterFileError(ValueError):
    """The file as a whole cannot be read (encoding, headings); the message says why."""


@dataclass(frozen=True)
class RosterRow:
    line: int
    external_ref: str
    name: str
    birth_date: dt.date | None = None
    school: str | None = None
    grade: int | None = None
    phone: str | None = None
    email: str | None = None
    guardian_name: str | None = None
    guardian_phone: str | None = None
    guardian_relation: str | None = None
    guardian_email: str | None = None
    class_name: str | None = None
    joined_on: dt.date | None = None
    #: The record as it stood in the file, for the report should it turn out bad later.
    raw: str = field(default="", compare=False, repr=False)


@dataclass(frozen=True)
class BadRow:
    line: int
    reason: str
    raw: str


@dataclass(frozen=True)
class RosterFile:
    """The parsed file: every record in order, good or bad, and what it was read as."""

    records: list[RosterRow | BadRow]
    encoding: str
    sha256: str
    ignored_headings: list[str]


def decode(data: bytes, encoding: str = "auto") -> tuple[str, str]:
    """The text and the encoding it was read with."""
    candidates = ("utf-8-sig", "cp949") if encoding == "auto" else (
        "utf-8-sig" if encoding == "utf-8" else encoding,)
    for name in candidates:
        try:
            return data.decode(name), name
        except UnicodeDecodeError:
            continue
    raise RosterFileError(f"the file is not {' or '.join(candidates)} text")


def parse(data: bytes, encoding: str = "auto") -> RosterFile:
    text_, used = decode(data, encoding)
    reader = csv.reader(io.StringIO(text_, newline=""))
    try:
        header = next(reader)
    except StopIteration:
        raise RosterFileError("the file is empty") from None
    fields, ignored = _map_headings(header)
    missing = [LABELS[f] for f in REQUIRED if f not in fields.values()]
    if missing:
        raise RosterFileError(
            f"the heading row (line 1) lacks {', '.join(missing)}; it has: "
            + ", ".join(h.strip() for h in header))
    records: list[RosterRow | BadRow] = []
    first_line_of: dict[str, int] = {}
    line = reader.line_num + 1
    for cells in reader:
        start, line = line, reader.line_num + 1
        if not any(c.strip() for c in cells):
            continue  # Excel's trailing empty rows
        raw = _raw(cells)
        if len(cells) != len(header):
            records.append(BadRow(start, f"열 개수가 머리글과 다릅니다 (머리글 {len(header)}개, "
                                         f"이 줄 {len(cells)}개)", raw))
            continue
        values = {fields[i]: c.strip() for i, c in enumerate(cells) if i in fields and c.strip()}
        record = check_row(start, values, raw)
        if isinstance(record, RosterRow):
            earlier = first_line_of.setdefault(record.external_ref, start)
            if earlier != start:
                record = BadRow(start, f"학번 {record.external_ref}이(가) {earlier}번째 줄과 "
                                       "중복됩니다", raw)
        records.append(record)
    return RosterFile(records, used, hashlib.sha256(data).hexdigest(), ignored)


def check_row(line: int, values: dict[str, str], raw: str = "") -> RosterRow | BadRow:
    """The row, cleaned, or the first reason it cannot be imported."""
    for name in REQUIRED:
        if not values.get(name):
            return BadRow(line, f"{LABELS[name]}이(가) 비어 있습니다", raw)
    clean: dict[str, object] = {"external_ref": values["external_ref"], "name": values["name"]}
    try:
        for name in ("school", "guardian_name", "guardian_relation", "class_name"):
            clean[name] = values.get(name)
        for name in ("birth_date", "joined_on"):
            if name in values:
                clean[name] = parse_date(values[name], LABELS[name])
        if "grade" in values:
            clean["grade"] = parse_grade(values["grade"])
        for name in ("phone", "guardian_phone"):
            if name in values:
                clean[name] = parse_phone(values[name], LABELS[name])
        for name in ("email", "guardian_email"):
            if name in values:
                clean[name] = parse_email(values[name], LABELS[name])
    except ValueError as exc:
        return BadRow(line, str(exc), raw)
    if clean.get("guardian_name") and not (clean.get("guardian_phone")
                                           or clean.get("guardian_email")):
        return BadRow(line, "보호자 연락처(전화번호 또는 이메일)가 없습니다", raw)
    return RosterRow(line=line, raw=raw, **clean)  # type: ignore[arg-type]


def parse_date(value: str, label: str) -> dt.date:
    """``2012-03-15``, ``2012.3.15``, ``2012. 3. 15.``, ``2012/03/15`` or ``20120315``."""
    parts = re.findall(r"\d+", value)
    if len(parts) == 1 and len(parts[0]) == 8:
        parts = [parts[0][:4], parts[0][4:6], parts[0][6:]]
    try:
        if len(parts) != 3 or len(parts[0]) != 4:
            raise ValueError
        day = dt.date(int(parts[0]), int(parts[1]), int(parts[2]))
    except ValueError:
        raise ValueError(f"{label} '{value}'을(를) 날짜로 읽을 수 없습니다 (예: 2012-03-15)") from None
    if not 1900 <= day.year <= 2100:
        raise ValueError(f"{label} '{value}'의 연도가 올바르지 않습니다")
    return day


def parse_grade(value: str) -> int:
    """School year 1..12 from ``8``, ``중2``, ``중학교 2학년``, ``고1``, ``초등 5학년``."""
    match = _GRADE.fullmatch(value.replace(" ", ""))
    if match:
        level, number = match.group(1), int(match.group(2))
        if number in _GRADE_RANGE[level]:
            return _GRADE_OFFSET[level] + number
    raise ValueError(f"학년 '{value}'을(를) 알 수 없습니다 (예: 초5, 중2, 고1 또는 1~12)")


def parse_phone(value: str, label: str) -> str:
    """A Korean number, written ``010-1234-5678``; Excel's lost leading zero is put back."""
    digits = re.sub(r"\D", "", value)
    if digits.startswith("82"):  # +82 10-...
        digits = "0" + digits[2:]
    if len(digits) in (9, 10) and digits[0] == "1":  # 1012345678: the zero Excel dropped
        digits = "0" + digits
    if not (digits.startswith("0") and 9 <= len(digits) <= 11):
        raise ValueError(f"{label} '{value}'이(가) 전화번호 형식이 아닙니다")
    if digits.startswith("02"):
        return f"02-{digits[2:-4]}-{digits[-4:]}"
    return f"{digits[:3]}-{digits[3:-4]}-{digits[-4:]}"


def parse_email(value: str, label: str) -> str:
    if not _EMAIL.fullmatch(value):
        raise ValueError(f"{label} '{value}'이(가) 이메일 주소 형식이 아닙니다")
    return value


def _map_headings(header: list[str]) -> tuple[dict[int, str], list[str]]:
    """Column index -> field, and the headings no field goes by."""
    by_name = {alias.replace(" ", "").lower(): name
               for name, aliases in HEADINGS.items() for alias in aliases}
    fields: dict[int, str] = {}
    ignored = []
    for i, heading in enumerate(header):
        target = by_name.get(heading.replace(" ", "").replace("\ufeff", "").lower())
        if target is None or target in fields.values():
            if heading.strip():
                ignored.append(heading.strip())
            continue
        fields[i] = target
    return fields, ignored


def _raw(cells: list[str]) -> str:
    out = io.StringIO()
    csv.writer(out, lineterminator="").writerow(cells)
    return out.getvalue()[:MAX_RAW]


def batches(records: list[RosterRow | BadRow], size: int,
            start: int = 0) -> Iterator[tuple[int, list[RosterRow | BadRow]]]:
    """``(index after the batch, batch)`` from record ``start`` on."""
    for first in range(start, len(records), size):
        chunk = records[first:first + size]
        yield first + len(chunk), chunk
