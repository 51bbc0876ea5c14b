"""`json`: a folder of JSON files, readable and diffable by people.

    <path>/departments.json             {"departments": [...], "idempotency": {...}}
    <path>/events/<department>.json     {"epoch", "seq", "horizon", "events": [...], "tombstones": [...],
                                         "idempotency": {...}}   one file per department: its feed
    <path>/events/<department>.journal  one JSON line per event change since that file was written
    <path>/.lock                        held while a process uses the folder

A department's file is replaced whole and atomically (temp file, fsync, rename, fsync
folder), so a `kill -9` leaves the old file or the new one, never a broken one. Event
creates, updates and deletes do not rewrite it: each appends one line to the department's
journal and fsyncs it before it is acknowledged, so a write costs the same at 10 events or
10,000. When the journal has grown (`COMPACT_LINES`), the file is rewritten with everything
in it and the journal emptied. Reading a department takes its file, then the journal's
lines past the file's seq; a last line cut short by a crash was never acknowledged and is
dropped. The whole store is also kept in memory; all work runs on one worker thread, in
call order.
"""
from __future__ import annotations

import dataclasses
import errno
import fcntl
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Collection, Mapping, Sequence, TypeVar

from calsync.storage.base import BackendOptions
from calsync.storage.book import Books, DepartmentBook, check_versions, kept_create
from calsync.storage.errors import (
    StorageSetupError,
    StorageUnavailable,
)
from calsync.storage.feed import Change, Cursor, FeedPage, FeedState, IdempotencyKey, Kind, StoredCreate, Tombstone
from calsync.storage.records import Department, Event, import_outcome
from calsync.storage.threaded import ThreadedStorage

T = TypeVar("T")
#: A journal this long is folded into its department's file.
COMPACT_LINES = 1000


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


class Journal:
    """One department's journal file: whole lines appended and fsync'd, nothing else.

    Appends start at the end of the last good line (`good`), so a write that failed half-way
    (a full disk) is overwritten by the next one and never leaves half a line before it.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.good = path.stat().st_size if path.exists() else 0
        self.lines = 0

    def append(self, entry: dict[str, Any]) -> None:
        line = json.dumps(entry, ensure_ascii=False).encode("utf-8") + b"\n"
        created = not self.path.exists()
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT, 0o644)
        try:
            os.lseek(fd, self.good, os.SEEK_SET)
            written = os.write(fd, line)
            if written != len(line):
                raise OSError(errno.ENOSPC, "short write to the journal")
            os.ftruncate(fd, self.good + len(line))
            os.fsync(fd)
        except OSError:
            try:
                os.ftruncate(fd, self.good)
            except OSError:
                pass
            raise
        finally:
            os.close(fd)
        if created:
            fsync_folder(self.path.parent)
        self.good += len(line)
        self.lines += 1

    def clear(self) -> None:
        """Empty it: its lines are in the department's file now."""
        if self.path.exists():
            with open(self.path, "r+b") as f:
                f.truncate(0)
                os.fsync(f.fileno())
        self.good = 0
        self.lines = 0

    def read(self) -> list[dict[str, Any]]:
        """Its entries; a last line cut short by a crash is dropped (and cut off the file)."""
        if not self.path.exists():
            return []
        data = self.path.read_bytes()
        entries, position = [], 0
        for raw in data.splitlines(keepends=True):
            try:
                if not raw.endswith(b"\n"):
                    raise ValueError("cut short")
                entries.append(json.loads(raw))
            except ValueError:
                if position + len(raw) < len(data):
                    raise StorageSetupError(f"{self.path}: line {len(entries) + 1} is not a journal entry") from None
                break  # the last line, never acknowledged
            position += len(raw)
        if position < len(data):
            with open(self.path, "r+b") as f:
                f.truncate(position)
                os.fsync(f.fileno())
        self.good = position
        self.lines = len(entries)
        return entries


def fsync_folder(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class JsonStorage(Books, ThreadedStorage):
    options_class = JsonOptions
    options: JsonOptions

    def __init__(self, options: JsonOptions) -> None:
        ThreadedStorage.__init__(self, options)
        Books.__init__(self)
        self._lock_file: Any = None
        self._journals: dict[str, Journal] = {}

    @property
    def _departments_file(self) -> Path:
        return self.options.path / "departments.json"

    def _events_file(self, department_id: str) -> Path:
        return self.options.path / "events" / f"{department_id}.json"

    def _journal(self, department_id: str) -> Journal:
        journal = self._journals.get(department_id)
        if journal is None:
            journal = self._journals[department_id] = Journal(self.options.path / "events" / f"{department_id}.journal")
        return journal

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
        document = self._read(self._departments_file, "departments")
        departments = [Department.from_dict(d) for d in document.get("departments", [])]
        self._department_creates = {name: StoredCreate.from_dict(x)
                                    for name, x in document.get("idempotency", {}).items()}
        self._books = {d.id: DepartmentBook.from_document(d, {}) for d in departments}
        for path in list((folder / "events").glob("*.json")) + list((folder / "events").glob("*.journal")):
            if path.stem not in self._books:
                path.unlink()  # left behind by a department delete cut short
        for path in (folder / "events").glob("*.json"):
            department_id = path.stem
            document = self._read(path, "events")
            book = DepartmentBook.from_document(self._books[department_id].department, document)
            if "epoch" not in document:  # from before the feed: write its new epoch down now
                write_atomically(path, book.to_document())
            replay(book, self._journal(department_id).read())
            self._books[department_id] = book
            self._event_department.update((event_id, department_id) for event_id in book.events)
        for department_id, book in self._books.items():
            if not self._events_file(department_id).exists():
                write_atomically(self._events_file(department_id), book.to_document())  # fix its epoch

    @staticmethod
    def _read(path: Path, key: str) -> dict[str, Any]:
        if not path.exists():
            return {}
        try:
            document = json.loads(path.read_text(encoding="utf-8"))
            if not isinstance(document.get(key), list):
                raise TypeError(f"'{key}' is not a list")
            return document
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            raise StorageSetupError(f"{path}: not a calsync JSON file ({exc})") from None

    async def create_tables(self) -> list[str]:
        existed = self.options.path.exists()
        await self.open()
        return [f"JSON folder {self.options.path}: {'checked' if existed else 'created'}"]

    async def ping(self) -> None:
        """Ready means a write would succeed now: write and remove a small file the way every
        change is written (a full disk or a read-only folder fails here)."""
        def probe() -> None:
            path = self.options.path / ".ready"
            write_atomically(path, {"pid": os.getpid()})
            path.unlink()

        await self._call(probe)

    async def close(self) -> None:
        if self._lock_file is not None:
            await self.run(self._lock_file.close)
            self._lock_file = None
        await self.shutdown_threads()

    async def _call(self, fn: Callable[[], T]) -> T:
        return await self.run(self._opened, fn)

    def _opened(self, fn: Callable[[], T]) -> T:
        if self._lock_file is None:
            raise StorageUnavailable()
        return fn()

    def unavailable(self, error: BaseException) -> bool:
        # Disk full or read-only: the change was not made and memory still matches disk.
        return isinstance(error, OSError)

    # -- writing: disk first, then memory, so a failed write changes nothing --------------
    def _save_departments(self, books: dict[str, DepartmentBook], creates: dict[str, StoredCreate]) -> None:
        departments = sorted((b.department for b in books.values()), key=lambda d: d.created_at)
        document = {
            "departments": [{k: v for k, v in d.to_dict().items() if k not in ("seq", "epoch")} for d in departments],
            "idempotency": {name: stored.to_dict() for name, stored in creates.items()},
        }
        write_atomically(self._departments_file, document)
        self._books = books
        self._department_creates = creates

    def _save_book(self, book: DepartmentBook, entry: dict[str, Any] | None = None) -> None:
        """Put one department's change on disk, then make `book` the one in memory: `entry`
        appended to its journal, or (without one, or when the journal is long) the whole
        department written to its file and the journal emptied."""
        department_id = book.department.id
        journal = self._journal(department_id)
        if entry is not None and journal.lines < COMPACT_LINES:
            journal.append({"epoch": book.department.epoch, **entry})
        else:
            write_atomically(self._events_file(department_id), book.to_document())
            journal.clear()
        if entry is not None:  # one event changed: no need to compare every id
            if "put" in entry:
                self._event_department[entry["put"]["id"]] = department_id
            else:
                self._event_department.pop(entry["remove"]["id"], None)
        else:
            old = self._books[department_id].events
            for event_id in old.keys() - book.events.keys():
                if self._event_department.get(event_id) == department_id:  # not moved to another department
                    del self._event_department[event_id]
            self._event_department.update((event_id, department_id) for event_id in book.events.keys() - old.keys())
        self._books[department_id] = book

    # -- departments ----------------------------------------------------------------------
    async def list_departments(self) -> list[Department]:
        return await self._call(self._departments)

    async def get_department(self, department_id: str) -> Department:
        return await self._call(lambda: self._book(department_id).department)

    async def create_department(self, name: str, description: str = "",
                                idempotency: IdempotencyKey | None = None) -> Change:
        def create() -> Change:
            stored = kept_create(self._department_creates, idempotency, self.clock())
            if stored is not None:
                return stored.replay(idempotency)
            self._check_name_free(name)
            book = DepartmentBook(Department.new(name, description))
            change = Change(Kind.DEPARTMENT_CREATED, book.department)
            creates = dict(self._department_creates)
            if idempotency is not None:
                creates[idempotency.name] = StoredCreate.of(idempotency, change, self.clock())
            # The feed file first: a crash before departments.json leaves an orphan that
            # the next start removes, never a department whose epoch is not on disk.
            write_atomically(self._events_file(book.department.id), book.to_document())
            self._save_departments({**self._books, book.department.id: book}, creates)
            return change

        return await self._call(create)

    async def update_department(self, department_id: str, changes: Mapping[str, Any]) -> Change:
        def update() -> Change:
            book = self._book(department_id).copy()
            if "name" in changes:
                self._check_name_free(changes["name"], department_id)
            book.department = book.department.updated(changes)
            self._save_departments({**self._books, department_id: book}, self._department_creates)
            return Change(Kind.DEPARTMENT_UPDATED, book.department)

        return await self._call(update)

    async def delete_department(self, department_id: str) -> Change:
        def delete() -> Change:
            book = self._book(department_id)
            remaining = dict(self._books)
            del remaining[department_id]
            self._save_departments(remaining, self._department_creates)
            for event_id in book.events:
                del self._event_department[event_id]
            self._events_file(department_id).unlink(missing_ok=True)
            self._journal(department_id).path.unlink(missing_ok=True)
            self._journals.pop(department_id, None)
            return Change(Kind.DEPARTMENT_DELETED, book.department)

        return await self._call(delete)

    # -- events ---------------------------------------------------------------------------
    async def list_events(
        self, department_id: str, date_from: str | None = None, date_to: str | None = None
    ) -> list[Event]:
        return await self._call(lambda: self._events_of(department_id, date_from, date_to))

    async def get_event(self, event_id: str) -> Event:
        return await self._call(lambda: self._event(event_id))

    async def create_event(self, department_id: str, fields: Mapping[str, Any],
                           idempotency: IdempotencyKey | None = None) -> Change:
        def create() -> Change:
            book = self._book(department_id).copy()
            stored = kept_create(book.creates, idempotency, self.clock())
            if stored is not None:
                return stored.replay(idempotency)
            event = book.put(Event.new(department_id, fields))
            change = Change(Kind.EVENT_CREATED, event, event.seq)
            entry: dict[str, Any] = {"seq": event.seq, "put": event.to_dict()}
            if idempotency is not None:
                stored = book.creates[idempotency.name] = StoredCreate.of(idempotency, change, self.clock())
                entry["create"] = [idempotency.name, stored.to_dict()]
            self._save_book(book, entry)
            return change

        return await self._call(create)

    async def update_event(self, event_id: str, changes: Mapping[str, Any],
                           if_versions: Collection[int] | None = None) -> Change:
        def update() -> Change:
            current = self._event(event_id)
            check_versions(current, if_versions)
            book = self._books[current.department_id].copy()
            event = book.put(current.updated(changes))
            self._save_book(book, {"seq": event.seq, "put": event.to_dict()})
            return Change(Kind.EVENT_UPDATED, event, event.seq)

        return await self._call(update)

    async def delete_event(self, event_id: str, if_versions: Collection[int] | None = None) -> Change:
        def delete() -> Change:
            event = self._event(event_id)
            check_versions(event, if_versions)
            book = self._books[event.department_id].copy()
            tombstone = book.remove(event_id, self.clock())
            self._save_book(book, {"seq": tombstone.seq, "remove": tombstone.to_dict() | {"deleted_at": tombstone.deleted_at}})
            return Change(Kind.EVENT_DELETED, event, tombstone.seq)

        return await self._call(delete)

    # -- the feed -------------------------------------------------------------------------
    async def feed_state(self, department_id: str) -> FeedState:
        return await self._call(lambda: self._book(department_id).state())

    async def read_feed(self, department_id: str, cursor: Cursor | None = None,
                        limit: int | None = None) -> FeedPage:
        return await self._call(lambda: self._book(department_id).page(cursor, limit))

    async def purge(self, tombstone_seconds: float) -> int:
        def purge() -> int:
            now = self.clock()
            purged = 0
            for book in list(self._books.values()):
                book = book.copy()
                count = book.purge(tombstone_seconds, now)
                if count:
                    self._save_book(book)
                    purged += count
            creates = {name: stored for name, stored in self._department_creates.items() if stored.live(now)}
            if len(creates) != len(self._department_creates):
                purged += len(self._department_creates) - len(creates)
                self._save_departments(self._books, creates)
            return purged

        return await self._call(purge)

    # -- bulk import ----------------------------------------------------------------------
    async def import_departments(self, records: Sequence[Department]) -> list[str]:
        def upsert() -> list[str]:
            for record in records:
                self._check_name_free(record.name, owner_id=record.id)
            outcomes = [import_outcome(self._books[r.id].department if r.id in self._books else None, r)
                        for r in records]
            if all(o == "unchanged" for o in outcomes):
                return outcomes
            books = dict(self._books)
            for record, outcome in zip(records, outcomes, strict=True):
                if outcome == "unchanged":
                    continue
                if record.id in books:
                    book = books[record.id].copy()
                    book.department = dataclasses.replace(record, seq=book.department.seq)
                else:
                    book = DepartmentBook(record)
                book.restart()
                write_atomically(self._events_file(record.id), book.to_document())
                self._journal(record.id).clear()
                books[record.id] = book
            self._save_departments(books, self._department_creates)
            return outcomes

        return await self._call(upsert)

    async def import_events(self, records: Sequence[Event]) -> list[str]:
        def upsert() -> list[str]:
            outcomes = []
            changed: dict[str, DepartmentBook] = {}
            for record in records:
                self._book(record.department_id)
                existing = self._event_department.get(record.id)
                outcome = import_outcome(existing and self._event(record.id), record)
                outcomes.append(outcome)
                if outcome == "unchanged":
                    continue
                if existing and existing != record.department_id:  # moved between departments
                    changed.setdefault(existing, self._books[existing].copy()).remove(record.id, self.clock())
                changed.setdefault(record.department_id, self._books[record.department_id].copy()).put(record)
            for book in changed.values():
                book.restart()
                self._save_book(book)
            return outcomes

        return await self._call(upsert)


def replay(book: DepartmentBook, entries: list[dict[str, Any]]) -> None:
    """Bring a department read from its file up to date with its journal's entries (those of
    its epoch past its seq; older ones are in the file already)."""
    for entry in entries:
        seq = int(entry["seq"])
        if entry.get("epoch") != book.department.epoch or seq <= book.department.seq:
            continue
        if "put" in entry:
            event = Event.from_dict(entry["put"])
            book.events[event.id] = event
            book.tombstones.pop(event.id, None)
        else:
            gone = entry["remove"]
            book.events.pop(gone["id"], None)
            book.tombstones[gone["id"]] = Tombstone(gone["id"], seq, float(gone["deleted_at"]))
        if "create" in entry:
            name, stored = entry["create"]
            book.creates[name] = StoredCreate.from_dict(stored)
        book.department = dataclasses.replace(book.department, seq=seq)
