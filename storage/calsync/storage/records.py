"""The two records calsync stores, and the rules for making and changing them.

Every backend builds records through these functions, so ids, timestamps and versions
follow one rule whatever the storage.
"""
from __future__ import annotations

import dataclasses
import secrets
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Iterable, Mapping, TypeVar

# Fields a client may set on an event; everything else on the record belongs to the server.
EVENT_FIELDS = ("event_date", "title", "description", "time", "url")
DEPARTMENT_FIELDS = ("name", "description")


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


def new_epoch() -> str:
    """A department feed's epoch: short, random, and never reused (contract 8.4)."""
    return secrets.token_hex(4)


# Feed position (`seq`, `epoch`) is not content: two records are equal when what a person
# reads in them is equal, so a migrated copy compares equal to its source.
_Position = TypeVar("_Position", int, str)


def _position(default: _Position) -> _Position:
    return field(default=default, compare=False)


@dataclass(frozen=True)
class Department:
    id: str
    name: str
    description: str
    created_at: str
    updated_at: str
    #: The latest seq of the department's feed, and the feed's epoch.
    seq: int = _position(0)
    epoch: str = _position("")

    @classmethod
    def new(cls, name: str, description: str = "") -> "Department":
        now = utc_now()
        return cls(id=new_id(), name=name, description=description, created_at=now, updated_at=now,
                   seq=0, epoch=new_epoch())

    def updated(self, changes: Mapping[str, Any]) -> "Department":
        allowed = {k: v for k, v in changes.items() if k in DEPARTMENT_FIELDS}
        return dataclasses.replace(self, **allowed, updated_at=utc_now())

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "name": self.name, "description": self.description, "created_at": self.created_at,
                "updated_at": self.updated_at, "seq": self.seq, "epoch": self.epoch}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "Department":
        return cls(id=data["id"], name=data["name"], description=data["description"], created_at=data["created_at"],
                   updated_at=data["updated_at"], seq=int(data.get("seq", 0)), epoch=data.get("epoch", ""))


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
    #: The seq of the event's latest change in its department's feed.
    seq: int = _position(0)

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
        # Written out rather than `dataclasses.asdict`: a full sync turns thousands of these
        # into JSON, and asdict's deep copy costs several times more.
        return {"id": self.id, "department_id": self.department_id, "event_date": self.event_date,
                "title": self.title, "description": self.description, "time": self.time, "url": self.url,
                "created_at": self.created_at, "last_modified": self.last_modified, "version": self.version,
                "seq": self.seq}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "Event":
        return cls(id=data["id"], department_id=data["department_id"], event_date=data["event_date"],
                   title=data["title"], description=data["description"], time=data["time"], url=data["url"],
                   created_at=data["created_at"], last_modified=data["last_modified"], version=int(data["version"]),
                   seq=int(data.get("seq", 0)))
