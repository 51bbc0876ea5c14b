"""`memory`: everything in a dict, gone when the process ends. For throwaway runs and tests.

Every method runs to completion without awaiting, so on the IOLoop each one is atomic.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Collection, Mapping, Sequence

from calsync.storage.base import Storage
from calsync.storage.book import Books, DepartmentBook, check_versions, kept_create
from calsync.storage.feed import Change, Cursor, FeedPage, FeedState, IdempotencyKey, Kind, StoredCreate
from calsync.storage.records import Department, Event, import_outcome


class MemoryStorage(Books, Storage):
    def __init__(self, options: Any = None) -> None:
        Storage.__init__(self, options)
        Books.__init__(self)

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
        return self._departments()

    async def get_department(self, department_id: str) -> Department:
        return self._book(department_id).department

    async def create_department(self, name: str, description: str = "",
                                idempotency: IdempotencyKey | None = None) -> Change:
        stored = kept_create(self._department_creates, idempotency, self.clock())
        if stored is not None:
            return stored.replay(idempotency)
        self._check_name_free(name)
        department = Department.new(name, description)
        self._books[department.id] = DepartmentBook(department)
        change = Change(Kind.DEPARTMENT_CREATED, department)
        if idempotency is not None:
            self._department_creates[idempotency.name] = StoredCreate.of(idempotency, change, self.clock())
        return change

    async def update_department(self, department_id: str, changes: Mapping[str, Any]) -> Change:
        book = self._book(department_id)
        if "name" in changes:
            self._check_name_free(changes["name"], department_id)
        book.department = book.department.updated(changes)
        return Change(Kind.DEPARTMENT_UPDATED, book.department)

    async def delete_department(self, department_id: str) -> Change:
        book = self._book(department_id)
        del self._books[department_id]
        for event_id in book.events:
            del self._event_department[event_id]
        return Change(Kind.DEPARTMENT_DELETED, book.department)

    # events
    async def list_events(
        self, department_id: str, date_from: str | None = None, date_to: str | None = None
    ) -> list[Event]:
        return self._events_of(department_id, date_from, date_to)

    async def get_event(self, event_id: str) -> Event:
        return self._event(event_id)

    async def create_event(self, department_id: str, fields: Mapping[str, Any],
                           idempotency: IdempotencyKey | None = None) -> Change:
        book = self._book(department_id)
        stored = kept_create(book.creates, idempotency, self.clock())
        if stored is not None:
            return stored.replay(idempotency)
        event = book.put(Event.new(department_id, fields))
        self._event_department[event.id] = department_id
        change = Change(Kind.EVENT_CREATED, event, event.seq)
        if idempotency is not None:
            book.creates[idempotency.name] = StoredCreate.of(idempotency, change, self.clock())
        return change

    async def update_event(self, event_id: str, changes: Mapping[str, Any],
                           if_versions: Collection[int] | None = None) -> Change:
        current = self._event(event_id)
        check_versions(current, if_versions)
        event = self._books[current.department_id].put(current.updated(changes))
        return Change(Kind.EVENT_UPDATED, event, event.seq)

    async def delete_event(self, event_id: str, if_versions: Collection[int] | None = None) -> Change:
        event = self._event(event_id)
        check_versions(event, if_versions)
        tombstone = self._books[event.department_id].remove(event_id, self.clock())
        del self._event_department[event_id]
        return Change(Kind.EVENT_DELETED, event, tombstone.seq)

    # the feed
    async def feed_state(self, department_id: str) -> FeedState:
        return self._book(department_id).state()

    async def read_feed(self, department_id: str, cursor: Cursor | None = None,
                        limit: int | None = None) -> FeedPage:
        return self._book(department_id).page(cursor, limit)

    async def purge(self, tombstone_seconds: float) -> int:
        now = self.clock()
        stale = [name for name, stored in self._department_creates.items() if not stored.live(now)]
        for name in stale:
            del self._department_creates[name]
        return len(stale) + sum(book.purge(tombstone_seconds, now) for book in self._books.values())

    # bulk import
    async def import_departments(self, records: Sequence[Department]) -> list[str]:
        for record in records:
            self._check_name_free(record.name, owner_id=record.id)
        outcomes = []
        for record in records:
            book = self._books.get(record.id)
            outcomes.append(import_outcome(book and book.department, record))
            if book is None:
                self._books[record.id] = book = DepartmentBook(record)
            else:
                book.department = dataclasses.replace(record, seq=book.department.seq)
            book.restart()
        return outcomes

    async def import_events(self, records: Sequence[Event]) -> list[str]:
        for record in records:
            self._book(record.department_id)
        outcomes = []
        for record in records:
            existing = self._event_department.get(record.id)
            outcomes.append(import_outcome(existing and self._event(record.id), record))
            if existing and existing != record.department_id:
                self._books[existing].remove(record.id, self.clock())
            self._books[record.department_id].put(record)
            self._event_department[record.id] = record.department_id
        for department_id in {record.department_id for record in records}:
            self._books[department_id].restart()
        return outcomes
