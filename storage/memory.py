"""`memory`: everything in a dict, gone when the process ends. For throwaway runs and tests.

Every method runs to completion without awaiting, so on the IOLoop each one is atomic.
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

from storage.base import Storage
from storage.errors import DepartmentNotFound, DuplicateDepartmentName, EventNotFound
from storage.records import Department, Event, import_outcome, name_taken


class MemoryStorage(Storage):
    def __init__(self, options: Any = None) -> None:
        super().__init__(options)
        self._departments: dict[str, Department] = {}
        self._events: dict[str, Event] = {}

    async def open(self) -> None:
        return None

    async def ping(self) -> None:
        return None

    async def close(self) -> None:
        return None

    def describe(self) -> str:
        return "memory (not saved)"

    # departments
    async def list_departments(self) -> list[Department]:
        return sorted(self._departments.values(), key=lambda d: (d.name, d.id))

    async def get_department(self, department_id: str) -> Department:
        try:
            return self._departments[department_id]
        except KeyError:
            raise DepartmentNotFound() from None

    def _check_name_free(self, name: str, owner_id: str | None = None) -> None:
        if name_taken(self._departments.values(), name, owner_id):
            raise DuplicateDepartmentName()

    async def create_department(self, name: str, description: str = "") -> Department:
        self._check_name_free(name)
        department = Department.new(name, description)
        self._departments[department.id] = department
        return department

    async def delete_department(self, department_id: str) -> Department:
        department = await self.get_department(department_id)
        del self._departments[department_id]
        for event in [e for e in self._events.values() if e.department_id == department_id]:
            del self._events[event.id]
        return department

    # events
    async def list_events(
        self, department_id: str, date_from: str | None = None, date_to: str | None = None
    ) -> list[Event]:
        await self.get_department(department_id)
        events = [e for e in self._events.values() if e.department_id == department_id and e.within(date_from, date_to)]
        return sorted(events, key=Event.sort_key)

    async def get_event(self, event_id: str) -> Event:
        try:
            return self._events[event_id]
        except KeyError:
            raise EventNotFound() from None

    async def create_event(self, department_id: str, fields: Mapping[str, Any]) -> Event:
        await self.get_department(department_id)
        event = Event.new(department_id, fields)
        self._events[event.id] = event
        return event

    async def update_event(self, event_id: str, changes: Mapping[str, Any]) -> Event:
        event = (await self.get_event(event_id)).updated(changes)
        self._events[event_id] = event
        return event

    async def delete_event(self, event_id: str) -> Event:
        event = await self.get_event(event_id)
        del self._events[event_id]
        return event

    # bulk import
    async def import_departments(self, records: Sequence[Department]) -> list[str]:
        for record in records:
            self._check_name_free(record.name, owner_id=record.id)
        outcomes = [import_outcome(self._departments.get(r.id), r) for r in records]
        self._departments.update((r.id, r) for r in records)
        return outcomes

    async def import_events(self, records: Sequence[Event]) -> list[str]:
        for record in records:
            await self.get_department(record.department_id)
        outcomes = [import_outcome(self._events.get(r.id), r) for r in records]
        self._events.update((r.id, r) for r in records)
        return outcomes
