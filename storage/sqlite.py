"""`sqlite` (the default): one SQLite file, WAL journal, schema made on open.

One connection used from one worker thread, so writes are serialized in call order; a
write returns only after its transaction committed with `synchronous=FULL`.
"""
from __future__ import annotations

import sqlite3
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
from storage.records import Department, Event, import_outcome
from storage.threaded import ThreadedStorage

T = TypeVar("T")

SCHEMA = """
CREATE TABLE IF NOT EXISTS departments (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    description TEXT NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS events (
    id TEXT PRIMARY KEY,
    department_id TEXT NOT NULL REFERENCES departments(id) ON DELETE CASCADE,
    event_date TEXT NOT NULL,
    title TEXT NOT NULL,
    description TEXT NOT NULL,
    time TEXT NOT NULL,
    url TEXT NOT NULL,
    created_at TEXT NOT NULL,
    last_modified TEXT NOT NULL,
    version INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS events_by_department_date
    ON events (department_id, event_date, time, created_at, id);
"""

DEPARTMENT_COLUMNS = "id, name, description, created_at, updated_at"
EVENT_COLUMNS = (
    "id, department_id, event_date, title, description, time, url, created_at, last_modified, version"
)
EVENT_ORDER = "ORDER BY event_date, time, created_at, id"


@dataclass(frozen=True)
class SqliteOptions(BackendOptions):
    path: Path = Path("data/calsync.db")


class SqliteStorage(ThreadedStorage):
    options_class = SqliteOptions
    options: SqliteOptions

    def __init__(self, options: SqliteOptions) -> None:
        super().__init__(options)
        self._db: sqlite3.Connection | None = None

    def describe(self) -> str:
        return f"sqlite ({self.options.path})"

    # -- life cycle -----------------------------------------------------------------------
    async def open(self) -> None:
        if self._db is None:
            await self.run(self._open)

    def _open(self) -> None:
        path = self.options.path
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            db.row_factory = sqlite3.Row
            db.execute("PRAGMA busy_timeout = 5000")
            db.execute("PRAGMA journal_mode = WAL")
            db.execute("PRAGMA synchronous = FULL")
            db.execute("PRAGMA foreign_keys = ON")
            db.executescript(SCHEMA)
        except (OSError, sqlite3.Error) as exc:
            raise StorageSetupError(f"cannot open SQLite database {path}: {exc}") from None
        self._db = db

    async def create_tables(self) -> list[str]:
        existed = self.options.path.exists()
        await self.open()
        state = "schema checked" if existed else "created with schema"
        return [f"SQLite database {self.options.path}: {state}"]

    async def ping(self) -> None:
        await self._call(lambda db: db.execute("SELECT 1").fetchone())

    async def close(self) -> None:
        if self._db is not None:
            await self.run(self._db.close)
            self._db = None
        self.shutdown_threads()

    async def _call(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        return await self.run(self._guarded, fn)

    def _guarded(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        if self._db is None:
            raise StorageUnavailable()
        try:
            return fn(self._db)
        except sqlite3.OperationalError:
            # Disk full, I/O error, locked past busy_timeout: a passing outage, not a bug.
            raise StorageUnavailable() from None

    async def _transaction(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run `fn` inside one IMMEDIATE transaction: all of it commits, or none."""

        def transaction(db: sqlite3.Connection) -> T:
            db.execute("BEGIN IMMEDIATE")
            try:
                result = fn(db)
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")
            return result

        return await self._call(transaction)

    # -- departments ----------------------------------------------------------------------
    async def list_departments(self) -> list[Department]:
        rows = await self._call(
            lambda db: db.execute(f"SELECT {DEPARTMENT_COLUMNS} FROM departments ORDER BY name, id").fetchall()
        )
        return [Department(**row) for row in rows]

    @staticmethod
    def _find_department(db: sqlite3.Connection, department_id: str) -> Department | None:
        row = db.execute(f"SELECT {DEPARTMENT_COLUMNS} FROM departments WHERE id = ?", (department_id,)).fetchone()
        return Department(**row) if row else None

    def _department(self, db: sqlite3.Connection, department_id: str) -> Department:
        department = self._find_department(db, department_id)
        if department is None:
            raise DepartmentNotFound()
        return department

    async def get_department(self, department_id: str) -> Department:
        return await self._call(lambda db: self._department(db, department_id))

    async def create_department(self, name: str, description: str = "") -> Department:
        department = Department.new(name, description)

        def insert(db: sqlite3.Connection) -> Department:
            try:
                db.execute(
                    f"INSERT INTO departments ({DEPARTMENT_COLUMNS}) VALUES (?, ?, ?, ?, ?)",
                    _department_row(department),
                )
            except sqlite3.IntegrityError:
                raise DuplicateDepartmentName() from None
            return department

        return await self._call(insert)

    async def delete_department(self, department_id: str) -> Department:
        def delete(db: sqlite3.Connection) -> Department:
            department = self._department(db, department_id)
            db.execute("DELETE FROM events WHERE department_id = ?", (department_id,))
            db.execute("DELETE FROM departments WHERE id = ?", (department_id,))
            return department

        return await self._transaction(delete)

    # -- events ---------------------------------------------------------------------------
    async def list_events(
        self, department_id: str, date_from: str | None = None, date_to: str | None = None
    ) -> list[Event]:
        def select(db: sqlite3.Connection) -> list[Event]:
            self._department(db, department_id)
            rows = db.execute(
                f"SELECT {EVENT_COLUMNS} FROM events WHERE department_id = ?"
                " AND event_date >= ? AND event_date <= ? " + EVENT_ORDER,
                (department_id, date_from or "", date_to or "\U0010ffff"),
            ).fetchall()
            return [Event(**row) for row in rows]

        return await self._call(select)

    @staticmethod
    def _find_event(db: sqlite3.Connection, event_id: str) -> Event | None:
        row = db.execute(f"SELECT {EVENT_COLUMNS} FROM events WHERE id = ?", (event_id,)).fetchone()
        return Event(**row) if row else None

    def _event(self, db: sqlite3.Connection, event_id: str) -> Event:
        event = self._find_event(db, event_id)
        if event is None:
            raise EventNotFound()
        return event

    async def get_event(self, event_id: str) -> Event:
        return await self._call(lambda db: self._event(db, event_id))

    async def create_event(self, department_id: str, fields: Mapping[str, Any]) -> Event:
        event = Event.new(department_id, fields)

        def insert(db: sqlite3.Connection) -> Event:
            self._department(db, department_id)
            db.execute(f"INSERT INTO events ({EVENT_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?)", _event_row(event))
            return event

        return await self._transaction(insert)

    async def update_event(self, event_id: str, changes: Mapping[str, Any]) -> Event:
        def update(db: sqlite3.Connection) -> Event:
            event = self._event(db, event_id).updated(changes)
            db.execute(
                "UPDATE events SET event_date=?, title=?, description=?, time=?, url=?,"
                " last_modified=?, version=? WHERE id=?",
                (event.event_date, event.title, event.description, event.time, event.url,
                 event.last_modified, event.version, event.id),
            )
            return event

        return await self._transaction(update)

    async def delete_event(self, event_id: str) -> Event:
        def delete(db: sqlite3.Connection) -> Event:
            event = self._event(db, event_id)
            db.execute("DELETE FROM events WHERE id = ?", (event_id,))
            return event

        return await self._transaction(delete)

    # -- bulk import ----------------------------------------------------------------------
    async def import_departments(self, records: Sequence[Department]) -> list[str]:
        def write(db: sqlite3.Connection, record: Department) -> None:
            try:
                db.execute(
                    f"INSERT INTO departments ({DEPARTMENT_COLUMNS}) VALUES (?, ?, ?, ?, ?)"
                    " ON CONFLICT (id) DO UPDATE SET name = excluded.name, description = excluded.description,"
                    " created_at = excluded.created_at, updated_at = excluded.updated_at",
                    _department_row(record),
                )
            except sqlite3.IntegrityError:
                raise DuplicateDepartmentName() from None

        return await self._import(records, self._find_department, write)

    async def import_events(self, records: Sequence[Event]) -> list[str]:
        def write(db: sqlite3.Connection, record: Event) -> None:
            self._department(db, record.department_id)
            db.execute(
                f"INSERT INTO events ({EVENT_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?)"
                " ON CONFLICT (id) DO UPDATE SET department_id = excluded.department_id,"
                " event_date = excluded.event_date, title = excluded.title,"
                " description = excluded.description, time = excluded.time, url = excluded.url,"
                " created_at = excluded.created_at, last_modified = excluded.last_modified,"
                " version = excluded.version",
                _event_row(record),
            )

        return await self._import(records, self._find_event, write)

    async def _import(self, records: Sequence[T], read: Callable, write: Callable) -> list[str]:
        """Write a batch in one transaction, skipping records already stored as they are."""

        def body(db: sqlite3.Connection) -> list[str]:
            outcomes = []
            for record in records:
                outcome = import_outcome(read(db, record.id), record)
                if outcome != "unchanged":
                    write(db, record)
                outcomes.append(outcome)
            return outcomes

        return await self._transaction(body)

def _department_row(d: Department) -> tuple:
    return (d.id, d.name, d.description, d.created_at, d.updated_at)


def _event_row(e: Event) -> tuple:
    return (e.id, e.department_id, e.event_date, e.title, e.description, e.time, e.url,
            e.created_at, e.last_modified, e.version)
