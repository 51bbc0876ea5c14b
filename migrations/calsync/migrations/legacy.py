"""Reading the original server's JSON files, checking every record before anything is written.

    departments.json       {"departments": [{"id": 1, "name": "개발팀", "description": "..."}]}
    calendar_events.json   {"2024-01-20": [{"Title": ..., "DepartmentId": 1, ...}, ...]}

Event keys come in PascalCase (`Title`, `LastModified`, `DepartmentId`, ...) or camelCase
(`title`, `departmentId`, ...); both are read, as is the new server's snake_case. Legacy ids
may be integers or strings and compare as strings (`1` and `"1"` are the same).

Ids are derived from the files (UUIDv5 under `NAMESPACE`), so migrating the same files
twice writes the same records twice: nothing is duplicated.
"""
from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from marshmallow import ValidationError

from calsync.storage.errors import ValidationFailed
from calsync.storage.fields import check_date, department_schema, event_schema
from calsync.storage.records import Department

LINE_END = re.compile("\r\n?")
NAMESPACE = uuid.UUID("6b1f8f3e-2a4c-5d0e-9f7a-3c5b8e1d4a20")  # fixed forever: ids depend on it
DEPARTMENTS_FILE = "departments.json"
EVENTS_FILE = "calendar_events.json"


def derived_id(*parts: object) -> str:
    return str(uuid.uuid5(NAMESPACE, ":".join(str(p) for p in parts)))


def department_id_for(legacy_id: str) -> str:
    return derived_id("department", legacy_id)


class LegacyFileError(Exception):
    """A file that cannot be read at all (not JSON, wrong shape): nothing is migrated."""


@dataclass(frozen=True)
class Problem:
    """A record that cannot be migrated: which file, where in it, and why."""

    kind: str  # "department" or "event"
    file: str
    where: str
    message: str
    records: int = 1  # how many records it keeps out (a bad date key: all of that date's)

    def __str__(self) -> str:
        return f"{self.file}: {self.where}: {self.message}"


@dataclass
class LegacyEvent:
    """A checked event whose department is still the legacy reference (None: it had none)."""

    id: str
    legacy_department: str | None
    fields: dict[str, str]
    created_at: str
    last_modified: str
    where: str


@dataclass
class LegacyData:
    departments: dict[str, Department] = field(default_factory=dict)  # legacy id -> record
    events: list[LegacyEvent] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)


def read_legacy(folder: Path) -> LegacyData:
    departments_path, events_path = folder / DEPARTMENTS_FILE, folder / EVENTS_FILE
    if not departments_path.is_file() and not events_path.is_file():
        raise LegacyFileError(f"{folder}: neither {DEPARTMENTS_FILE} nor {EVENTS_FILE} is there")
    data = LegacyData()
    if departments_path.is_file():
        _read_departments(departments_path, data)
    if events_path.is_file():
        _read_events(events_path, data)
    return data


def _load(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise LegacyFileError(f"{path.name}: line {exc.lineno}, column {exc.colno}: {exc.msg}") from None
    except UnicodeDecodeError as exc:
        raise LegacyFileError(f"{path.name}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except OSError as exc:
        raise LegacyFileError(f"{path.name}: cannot read: {exc.strerror}") from None


def _file_time(path: Path) -> str:
    """The fallback timestamp for records that carry none: stable while the file is unchanged."""
    moment = datetime.fromtimestamp(path.stat().st_mtime, timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def _timestamp(value: Any) -> str | None:
    """An ISO-8601 time as the contract writes it (UTC, milliseconds, Z), or None."""
    if not isinstance(value, str) or not value.strip():
        return None
    try:
        moment = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def _keys(item: dict) -> dict[str, Any]:
    """`DepartmentId`, `departmentId` and `department_id` all read as `departmentid`."""
    return {str(k).replace("_", "").lower(): v for k, v in item.items()}


def _legacy_id(value: Any) -> str | None:
    """Legacy ids compare as strings; None for no id (missing, null, "", bool)."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, (int, str)):
        text = str(value).strip()
        return text or None
    return None


def _line_ends(value: Any) -> Any:
    """Windows line ends ("\r\n", and a lone "\r") as newlines: the old server stored text as
    sent, and calsync refuses a carriage return like any control character (contract 13)."""
    return LINE_END.sub("\n", value) if isinstance(value, str) else value


def _text(value: Any) -> Any:
    return "" if value is None else _line_ends(value)


def _errors(exc: ValidationFailed) -> str:
    return "; ".join(f"{name}: {' '.join(messages)}" for name, messages in (exc.errors or {}).items())


def _read_departments(path: Path, data: LegacyData) -> None:
    document = _load(path)
    entries = document.get("departments") if isinstance(document, dict) else document
    if not isinstance(entries, list):
        raise LegacyFileError(f'{path.name}: expected {{"departments": [...]}}')
    fallback = _file_time(path)
    names: set[str] = set()
    for index, entry in enumerate(entries):
        where = f"departments[{index}]"
        if not isinstance(entry, dict):
            data.problems.append(Problem("department", path.name, where, "not a JSON object"))
            continue
        values = _keys(entry)
        try:
            fields = department_schema.parse({"name": _line_ends(values.get("name")), "description": _text(values.get("description"))})
        except ValidationFailed as exc:
            data.problems.append(Problem("department", path.name, where, _errors(exc)))
            continue
        legacy_id = _legacy_id(values.get("id"))
        if "id" in values and legacy_id is None:
            data.problems.append(Problem("department", path.name, where,
                                         f"id must be an integer or a string, got {values['id']!r}"))
            continue
        key = legacy_id if legacy_id is not None else f"name:{fields['name']}"
        if key in data.departments:
            data.problems.append(Problem("department", path.name, where, f"id {legacy_id} appears twice"))
            continue
        if fields["name"] in names:
            data.problems.append(Problem("department", path.name, where, f"name '{fields['name']}' appears twice"))
            continue
        names.add(fields["name"])
        created = _timestamp(values.get("createdat")) or fallback
        data.departments[key] = Department(
            id=department_id_for(key), name=fields["name"], description=fields["description"],
            created_at=created, updated_at=_timestamp(values.get("updatedat")) or created,
        )


def _read_events(path: Path, data: LegacyData) -> None:
    document = _load(path)
    if not isinstance(document, dict):
        raise LegacyFileError(f'{path.name}: expected {{"YYYY-MM-DD": [events...]}}')
    fallback = _file_time(path)
    seen: set[str] = set()
    for date, entries in document.items():
        try:
            check_date(date)
        except ValidationError as exc:
            count = len(entries) if isinstance(entries, list) else 1
            data.problems.append(Problem("event", path.name, f"date key '{date}'", " ".join(exc.messages), count))
            continue
        if not isinstance(entries, list):
            data.problems.append(Problem("event", path.name, f"date key '{date}'", "expected a list of events"))
            continue
        for index, entry in enumerate(entries):
            problem = _read_event(entry, date, index, fallback, data)
            if problem:
                data.problems.append(Problem("event", path.name, f"date key '{date}', index {index}", problem))
            elif data.events[-1].id in seen:
                data.events.pop()
                data.problems.append(Problem("event", path.name, f"date key '{date}', index {index}", "id appears twice"))
            else:
                seen.add(data.events[-1].id)


def _read_event(entry: Any, date: str, index: int, fallback: str, data: LegacyData) -> str | None:
    """Check one event and append it; the problem as text when it is not valid."""
    if not isinstance(entry, dict):
        return "not a JSON object"
    values = _keys(entry)
    raw = {"event_date": date, "title": _line_ends(values.get("title")), "description": _text(values.get("description")),
           "time": _text(values.get("time")), "url": _text(values.get("url"))}
    try:
        fields = event_schema.parse(raw)
    except ValidationFailed as exc:
        return _errors(exc)
    legacy_id = _legacy_id(values.get("id"))
    event_id = derived_id("event", legacy_id) if legacy_id else derived_id("event", date, index, fields["title"])
    modified = _timestamp(values.get("lastmodified")) or fallback
    data.events.append(LegacyEvent(
        id=event_id, legacy_department=_legacy_id(values.get("departmentid")), fields=fields,
        created_at=_timestamp(values.get("createdat")) or modified, last_modified=modified,
        where=f"{date}[{index}]",
    ))
    return None
