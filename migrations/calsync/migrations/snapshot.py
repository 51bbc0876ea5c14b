"""Everything a store holds, read through the `Storage` interface (every page of every table)."""
from __future__ import annotations

from dataclasses import dataclass, field

from calsync.storage.base import Storage
from calsync.storage.records import Department, Event


@dataclass
class Snapshot:
    departments: list[Department] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)

    def department_by_name(self, name: str) -> Department | None:
        return next((d for d in self.departments if d.name == name), None)


async def read_snapshot(storage: Storage) -> Snapshot:
    departments = await storage.list_departments()
    events = [event for department in departments for event in await storage.list_events(department.id)]
    return Snapshot(departments, events)
