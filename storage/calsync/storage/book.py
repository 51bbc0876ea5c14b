"""`DepartmentBook`: one department's events, tombstones and feed, held in memory.

The backends that keep everything in memory (`memory`, and `json`, which also writes it to
disk) share it, so the rules of the feed — every change takes the next seq, a delete leaves
a tombstone, purging raises the horizon — are written once.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Collection, Mapping

from calsync.storage.errors import DepartmentNotFound, DuplicateDepartmentName, EventNotFound, VersionConflict
from calsync.storage.feed import Cursor, FeedPage, FeedState, IdempotencyKey, StoredCreate, Tombstone, answer, expired
from calsync.storage.records import Department, Event, name_taken, new_epoch


def check_versions(event: Event, if_versions: Collection[int] | None) -> None:
    """The `If-Match` rule: the stored version must be among those named."""
    if if_versions is not None and event.version not in if_versions:
        raise VersionConflict(event)


def kept_create(creates: Mapping[str, StoredCreate], key: IdempotencyKey | None, now: float) -> StoredCreate | None:
    """The live create kept under `key`, if any (a repeat is answered from it)."""
    if key is None:
        return None
    stored = creates.get(key.name)
    return stored if stored is not None and stored.live(now) else None


class DepartmentBook:
    def __init__(self, department: Department, events: Mapping[str, Event] | None = None,
                 tombstones: Mapping[str, Tombstone] | None = None, horizon: int = 0,
                 creates: Mapping[str, StoredCreate] | None = None) -> None:
        self.department = department
        self.events: dict[str, Event] = dict(events or {})
        self.tombstones: dict[str, Tombstone] = dict(tombstones or {})
        self.horizon = horizon
        #: Idempotency keys of event creates in this department, by `IdempotencyKey.name`.
        self.creates: dict[str, StoredCreate] = dict(creates or {})

    def copy(self) -> "DepartmentBook":
        return DepartmentBook(self.department, self.events, self.tombstones, self.horizon, self.creates)

    # -- the feed --------------------------------------------------------------------------
    def state(self) -> FeedState:
        return FeedState(self.department.epoch, self.department.seq, self.horizon)

    def _next_seq(self) -> int:
        seq = self.department.seq + 1
        self.department = dataclasses.replace(self.department, seq=seq)
        return seq

    def put(self, event: Event) -> Event:
        """Store a created or changed event under the next seq."""
        event = dataclasses.replace(event, seq=self._next_seq())
        self.events[event.id] = event
        self.tombstones.pop(event.id, None)
        return event

    def remove(self, event_id: str, now: float) -> Tombstone:
        """Delete an event, leaving its tombstone under the next seq."""
        del self.events[event_id]
        tombstone = Tombstone(event_id, self._next_seq(), now)
        self.tombstones[event_id] = tombstone
        return tombstone

    def restart(self) -> None:
        """A new epoch: the feed's history was replaced (a migration wrote into it)."""
        self.department = dataclasses.replace(self.department, epoch=new_epoch())

    def page(self, cursor: Cursor | None, limit: int | None) -> FeedPage:
        return answer(self.department.id, self.state(), cursor, self.events.values(), self.tombstones.values(), limit)

    def purge(self, keep_seconds: float, now: float) -> int:
        """Drop expired tombstones and idempotency keys; the horizon rises past what was dropped."""
        gone = [t for t in self.tombstones.values() if expired(t.deleted_at, keep_seconds, now)]
        for tombstone in gone:
            del self.tombstones[tombstone.id]
            self.horizon = max(self.horizon, tombstone.seq)
        stale = [name for name, stored in self.creates.items() if not stored.live(now)]
        for name in stale:
            del self.creates[name]
        return len(gone) + len(stale)

    # -- on disk (the json backend) ----------------------------------------------------------
    def to_document(self) -> dict[str, Any]:
        return {
            "epoch": self.department.epoch,
            "seq": self.department.seq,
            "horizon": self.horizon,
            "events": [e.to_dict() for e in sorted(self.events.values(), key=Event.sort_key)],
            "tombstones": [{"id": t.id, "seq": t.seq, "deleted_at": t.deleted_at}
                           for t in sorted(self.tombstones.values(), key=lambda t: t.seq)],
            "idempotency": {name: stored.to_dict() for name, stored in self.creates.items()},
        }

    @classmethod
    def from_document(cls, department: Department, document: Mapping[str, Any]) -> "DepartmentBook":
        events = [Event.from_dict(x) for x in document.get("events", [])]
        if "epoch" not in document:
            # Written before the feed existed: start one, numbering the events in creation order.
            events = [dataclasses.replace(e, seq=n) for n, e in
                      enumerate(sorted(events, key=lambda e: (e.created_at, e.id)), start=1)]
            department = dataclasses.replace(department, epoch=new_epoch(), seq=len(events))
        else:
            department = dataclasses.replace(department, epoch=document["epoch"], seq=int(document["seq"]))
        tombstones = {t["id"]: Tombstone(t["id"], int(t["seq"]), float(t["deleted_at"]))
                      for t in document.get("tombstones", [])}
        creates = {name: StoredCreate.from_dict(x) for name, x in document.get("idempotency", {}).items()}
        return cls(department, {e.id: e for e in events}, tombstones, int(document.get("horizon", 0)), creates)



class Books:
    """Every department as a `DepartmentBook`, and an index of events by id: the in-memory
    core the `memory` and `json` backends share. `json` writes a change to disk before it
    puts it here; `memory` only puts it here."""

    def __init__(self) -> None:
        self._books: dict[str, DepartmentBook] = {}
        self._event_department: dict[str, str] = {}  # event id -> department id
        self._department_creates: dict[str, StoredCreate] = {}

    def _book(self, department_id: str) -> DepartmentBook:
        try:
            return self._books[department_id]
        except KeyError:
            raise DepartmentNotFound() from None

    def _event(self, event_id: str) -> Event:
        try:
            return self._books[self._event_department[event_id]].events[event_id]
        except KeyError:
            raise EventNotFound() from None

    def _check_name_free(self, name: str, owner_id: str | None = None) -> None:
        if name_taken((b.department for b in self._books.values()), name, owner_id):
            raise DuplicateDepartmentName()

    def _departments(self) -> list[Department]:
        return sorted((b.department for b in self._books.values()), key=lambda d: (d.name, d.id))

    def _events_of(self, department_id: str, date_from: str | None, date_to: str | None) -> list[Event]:
        events = [e for e in self._book(department_id).events.values() if e.within(date_from, date_to)]
        return sorted(events, key=Event.sort_key)
