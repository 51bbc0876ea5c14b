"""`json`: a folder of JSON files, readable and diffable by people.

    <path>/departments.json          {"departments": [...]}
    <path>/events/<department>.json  {"events": [...]} one file per department
    <path>/.lock                     held while a process uses the folder

Every write replaces a whole file atomically (temp file, fsync, rename, fsync folder), so
a `kill -9` leaves either the old file or the new one, never a broken one. The whole store
is also kept in memory; all work runs on one worker thread, in call order.
"""
from __future__ import annotations

import fcntl
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence, TypeVar

from storage.base import BackendOptions
from storage.errors import (
    DepartmentNotFound,
    DuplicateDepartmentName,
    EventNotFound,
    StorageSetupError,
    StorageUnavailable,
)
from storage.records import Department, Event, import_outcome, name_taken
from storage.threaded import ThreadedStorage

T = TypeVar("T")


@dataclass(frozen=True)
class JsonOptions(BackendOptions):
    path: Path = Path("data/json")


def write_atomically(path: Path, document: Any) -> None:
    """Replace `path` with `document` so that a crash leaves the old file or the new one."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    data = json.dumps(document, ensure_ascii=False, indent=1).encode("utf-8")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fsync_folder(path.parent)


def fsync_folder(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class JsonStorage(ThreadedStorage):
    options_class = JsonOptions
    options: JsonOptions

    def __init__(self, options: JsonOptions) -> None:
        super().__init__(options)
        self._lock_file: Any = None
        self._departments: dict[str, Department] = {}
        self._events: dict[str, dict[str, Event]] = {}  # department id -> event id -> event
        self._event_department: dict[str, str] = {}  # event id -> department id

    @property
    def _departments_file(self) -> Path:
        return self.options.path / "departments.json"

    def _events_file(self, department_id: str) -> Path:
        return self.options.path / "events" / f"{department_id}.json"

    def describe(self) -> str:
        return f"json ({self.options.path})"

    # -- life cycle -----------------------------------------------------------------------
    async def open(self) -> None:
        if self._lock_file is None:
            await self.run(self._open)

    def _open(self) -> None:
        folder = self.options.path
        try:
            (folder / "events").mkdir(parents=True, exist_ok=True)
            lock_file = open(folder / ".lock", "a+")
        except OSError as exc:
            raise StorageSetupError(f"cannot use JSON folder {folder}: {exc.strerror}") from None
        try:
            fcntl.flock(lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            lock_file.close()
            raise StorageSetupError(
                f"JSON folder {folder} is in use by another calsync process (lock held on {folder / '.lock'})"
            ) from None
        try:
            self._load()
            probe = folder / f".write-test.{os.getpid()}"
            probe.write_bytes(b"")
            probe.unlink()
        except BaseException:
            lock_file.close()
            raise
        self._lock_file = lock_file

    def _load(self) -> None:
        folder = self.options.path
        for leftover in list(folder.glob(".*.tmp")) + list((folder / "events").glob(".*.tmp")):
            leftover.unlink()  # an interrupted write; the file it was replacing is intact
        departments = [Department.from_dict(d) for d in self._read(self._departments_file, "departments")]
        self._departments = {d.id: d for d in departments}
        for path in (folder / "events").glob("*.json"):
            department_id = path.stem
            if department_id not in self._departments:
                path.unlink()  # left behind by a department delete cut short
                continue
            events = {e.id: e for e in (Event.from_dict(x) for x in self._read(path, "events"))}
            self._events[department_id] = events
            self._event_department.update((event_id, department_id) for event_id in events)

    @staticmethod
    def _read(path: Path, key: str) -> list[dict]:
        if not path.exists():
            return []
        try:
            document = json.loads(path.read_text(encoding="utf-8"))
            records = document[key]
            if not isinstance(records, list):
                raise TypeError(f"'{key}' is not a list")
            return records
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise StorageSetupError(f"{path}: not a calsync JSON file ({exc})") from None

    async def create_tables(self) -> list[str]:
        existed = self.options.path.exists()
        await self.open()
        return [f"JSON folder {self.options.path}: {'checked' if existed else 'created'}"]

    async def ping(self) -> None:
        await self._call(lambda: None)

    async def close(self) -> None:
        if self._lock_file is not None:
            await self.run(self._lock_file.close)
            self._lock_file = None
        self.shutdown_threads()

    async def _call(self, fn: Callable[[], T]) -> T:
        return await self.run(self._guarded, fn)

    def _guarded(self, fn: Callable[[], T]) -> T:
        if self._lock_file is None:
            raise StorageUnavailable()
        try:
            return fn()
        except OSError:
            # Disk full or read-only: the change was not made and memory still matches disk.
            raise StorageUnavailable() from None

    # -- writing: disk first, then memory, so a failed write changes nothing --------------
    def _save_departments(self, departments: dict[str, Department]) -> None:
        document = {"departments": [d.to_dict() for d in sorted(departments.values(), key=lambda d: d.created_at)]}
        write_atomically(self._departments_file, document)
        self._departments = departments

    def _save_events(self, department_id: str, events: dict[str, Event]) -> None:
        document = {"events": [e.to_dict() for e in sorted(events.values(), key=Event.sort_key)]}
        write_atomically(self._events_file(department_id), document)
        old = self._events.get(department_id, {})
        for event_id in old.keys() - events.keys():
            del self._event_department[event_id]
        self._event_department.update((event_id, department_id) for event_id in events)
        self._events[department_id] = events

    def _department(self, department_id: str) -> Department:
        try:
            return self._departments[department_id]
        except KeyError:
            raise DepartmentNotFound() from None

    def _event(self, event_id: str) -> Event:
        try:
            return self._events[self._event_department[event_id]][event_id]
        except KeyError:
            raise EventNotFound() from None

    def _check_name_free(self, name: str, owner_id: str | None = None) -> None:
        if name_taken(self._departments.values(), name, owner_id):
            raise DuplicateDepartmentName()

    # -- departments ----------------------------------------------------------------------
    async def list_departments(self) -> list[Department]:
        return await self._call(lambda: sorted(self._departments.values(), key=lambda d: (d.name, d.id)))

    async def get_department(self, department_id: str) -> Department:
        return await self._call(lambda: self._department(department_id))

    async def create_department(self, name: str, description: str = "") -> Department:
        def create() -> Department:
            self._check_name_free(name)
            department = Department.new(name, description)
            self._save_departments({**self._departments, department.id: department})
            return department

        return await self._call(create)

    async def delete_department(self, department_id: str) -> Department:
        def delete() -> Department:
            department = self._department(department_id)
            remaining = dict(self._departments)
            del remaining[department_id]
            self._save_departments(remaining)
            for event_id in self._events.pop(department_id, {}):
                del self._event_department[event_id]
            self._events_file(department_id).unlink(missing_ok=True)
            return department

        return await self._call(delete)

    # -- events ---------------------------------------------------------------------------
    async def list_events(
        self, department_id: str, date_from: str | None = None, date_to: str | None = None
    ) -> list[Event]:
        def select() -> list[Event]:
            self._department(department_id)
            events = [e for e in self._events.get(department_id, {}).values() if e.within(date_from, date_to)]
            return sorted(events, key=Event.sort_key)

        return await self._call(select)

    async def get_event(self, event_id: str) -> Event:
        return await self._call(lambda: self._event(event_id))

    def _put_event(self, event: Event) -> Event:
        events = {**self._events.get(event.department_id, {}), event.id: event}
        self._save_events(event.department_id, events)
        return event

    async def create_event(self, department_id: str, fields: Mapping[str, Any]) -> Event:
        def create() -> Event:
            self._department(department_id)
            return self._put_event(Event.new(department_id, fields))

        return await self._call(create)

    async def update_event(self, event_id: str, changes: Mapping[str, Any]) -> Event:
        return await self._call(lambda: self._put_event(self._event(event_id).updated(changes)))

    async def delete_event(self, event_id: str) -> Event:
        def delete() -> Event:
            event = self._event(event_id)
            events = dict(self._events[event.department_id])
            del events[event_id]
            self._save_events(event.department_id, events)
            return event

        return await self._call(delete)

    # -- bulk import ----------------------------------------------------------------------
    async def import_departments(self, records: Sequence[Department]) -> list[str]:
        def upsert() -> list[str]:
            for record in records:
                self._check_name_free(record.name, owner_id=record.id)
            outcomes = [import_outcome(self._departments.get(r.id), r) for r in records]
            if any(o != "unchanged" for o in outcomes):
                self._save_departments({**self._departments, **{r.id: r for r in records}})
            return outcomes

        return await self._call(upsert)

    async def import_events(self, records: Sequence[Event]) -> list[str]:
        def upsert() -> list[str]:
            outcomes = []
            changed: dict[str, dict[str, Event]] = {}
            for record in records:
                self._department(record.department_id)
                existing = self._event_department.get(record.id)
                outcome = import_outcome(existing and self._event(record.id), record)
                outcomes.append(outcome)
                if outcome == "unchanged":
                    continue
                if existing and existing != record.department_id:  # moved between departments
                    moved_from = changed.setdefault(existing, dict(self._events[existing]))
                    del moved_from[record.id]
                target = changed.setdefault(record.department_id, dict(self._events.get(record.department_id, {})))
                target[record.id] = record
            for department_id, events in changed.items():
                self._save_events(department_id, events)
            return outcomes

        return await self._call(upsert)
