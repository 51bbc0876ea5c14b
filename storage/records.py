"""The two records calsync stores, and the rules for making and changing them.

Every backend builds records through these functions, so ids, timestamps and versions
follow one rule whatever the storage.
"""
from __future__ import annotations

import dataclasses
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Iterable, Mapping

# Fields a client may set on an event; everything else on the record belongs to the server.
EVENT_FIELDS = ("event_date", "title", "description", "time", "url")


def import_outcome(existing: object | None, record: object) -> str:
    """What writing `record` over `existing` amounts to, in migration terms."""
    if existing is None:
        return "created"
    return "unchanged" if existing == record else "updated"


def name_taken(departments: Iterable["Department"], name: str, owner_id: str | None = None) -> bool:
    """Whether a department other than `owner_id` already has `name`."""
    return any(d.name == name and d.id != owner_id for d in departments)


def utc_now() -> str:
    """The contract's timestamp: UTC, milliseconds, `Z`."""
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def new_id() -> str:
    return str(uuid.uuid4())


@dataclass(frozen=True)
class Department:
    id: str
    name: str
    description: str
    created_at: str
    updated_at: str

    @classmethod
    def new(cls, name: str, description: str = "") -> "Department":
        now = utc_now()
        return cls(id=new_id(), name=name, description=description, created_at=now, updated_at=now)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "Department":
        return cls(**{f.name: data[f.name] for f in dataclasses.fields(cls)})


@dataclass(frozen=True)
class Event:
    id: str
    department_id: str
    event_date: str
    title: str
    description: str
    time: str
    url: str
    created_at: str
    last_modified: str
    version: int

    @classmethod
    def new(cls, department_id: str, fields: Mapping[str, Any]) -> "Event":
        now = utc_now()
        return cls(
            id=new_id(),
            department_id=department_id,
            event_date=fields["event_date"],
            title=fields["title"],
            description=fields.get("description", ""),
            time=fields.get("time", ""),
            url=fields.get("url", ""),
            created_at=now,
            last_modified=now,
            version=1,
        )

    def updated(self, changes: Mapping[str, Any]) -> "Event":
        """The next version: the given client fields changed, `last_modified` and `version` moved on."""
        allowed = {k: v for k, v in changes.items() if k in EVENT_FIELDS}
        return dataclasses.replace(self, **allowed, last_modified=utc_now(), version=self.version + 1)

    def within(self, date_from: str | None, date_to: str | None) -> bool:
        """`date_from <= event_date <= date_to`, either bound optional."""
        return (date_from is None or self.event_date >= date_from) and (date_to is None or self.event_date <= date_to)

    def sort_key(self) -> tuple[str, str, str, str]:
        """REST and sync order: date, then time (as text), then creation, then id to break ties."""
        return (self.event_date, self.time, self.created_at, self.id)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "Event":
        values = {f.name: data[f.name] for f in dataclasses.fields(cls)}
        values["version"] = int(values["version"])
        return cls(**values)
