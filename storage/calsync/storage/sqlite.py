"""`sqlite` (the default): one SQLite file, WAL journal, schema made on open.

One connection used from one worker thread, so writes are serialized in call order; a
write returns only after its transaction committed with `synchronous=FULL`.
"""
from __future__ import annotations

import dataclasses
import json
import os
import random
import sqlite3
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Collection, Mapping, Sequence, TypeVar

from calsync.storage.base import BackendOptions
from calsync.storage.errors import (
    DepartmentNotFound,
    DuplicateDepartmentName,
    EventNotFound,
    StorageSetupError,
    StorageUnavailable,
    VersionConflict,
)
from calsync.storage.feed import (
    Change,
    Cursor,
    FeedPage,
    FeedState,
    IdempotencyKey,
    Kind,
    StoredCreate,
    Tombstone,
    changes_page,
    full_page,
)
from calsync.storage.groupcommit import GroupCommit
from calsync.storage.records import Department, Event, import_outcome, new_epoch
from calsync.storage.threaded import ThreadedStorage

T = TypeVar("T")
Record = TypeVar("Record", Department, Event)

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
CREATE TABLE IF NOT EXISTS tombstones (
    department_id TEXT NOT NULL REFERENCES departments(id) ON DELETE CASCADE,
    seq INTEGER NOT NULL,
    id TEXT NOT NULL,
    deleted_at REAL NOT NULL,
    PRIMARY KEY (department_id, seq)
);
CREATE TABLE IF NOT EXISTS idempotency (
    name TEXT PRIMARY KEY,
    department_id TEXT REFERENCES departments(id) ON DELETE CASCADE,
    fingerprint TEXT NOT NULL,
    kind TEXT NOT NULL,
    record TEXT NOT NULL,
    expires_at REAL NOT NULL
);
"""

# Columns added by the change feed (contract section 8); a database made before it gets
# them on open, and each of its departments starts a feed (`_start_feeds`).
FEED_COLUMNS = {
    "departments": {"seq": "INTEGER NOT NULL DEFAULT 0", "epoch": "TEXT NOT NULL DEFAULT ''",
                    "horizon": "INTEGER NOT NULL DEFAULT 0"},
    "events": {"seq": "INTEGER NOT NULL DEFAULT 0"},
}
FEED_INDEX = "CREATE INDEX IF NOT EXISTS events_by_department_seq ON events (department_id, seq)"

DEPARTMENT_COLUMNS = "id, name, description, created_at, updated_at, seq, epoch"
EVENT_COLUMNS = (
    "id, department_id, event_date, title, description, time, url, created_at, last_modified, version, seq"
)
EVENT_ORDER = "ORDER BY event_date, time, created_at, id"
PING_WAIT_SECONDS = 0.2  # /ready's wait for the write lock
MIN_ROOM_BYTES = 1 << 20  # /ready says 503 when the database cannot grow by this much


@dataclass(frozen=True)
class SqliteOptions(BackendOptions):
    path: Path = Path("data/calsync.db")
    #: Seconds a write waits for a lock another process holds before answering 503.
    busy_timeout: float = field(default=5.0, metadata={"min": 0})


class SqliteStorage(ThreadedStorage):
    options_class = SqliteOptions
    options: SqliteOptions

    def __init__(self, options: SqliteOptions) -> None:
        super().__init__(options)
        self._db: sqlite3.Connection | None = None
        self._group = GroupCommit(self._executor, lambda: self._db, self.unavailable)

    def describe(self) -> str:
        return f"sqlite ({self.options.path})"

    # -- life cycle -----------------------------------------------------------------------
    async def open(self) -> None:
        if self._db is None:
            await self.run(self._open)

    def _open(self) -> None:
        """Connect, switch to WAL and make the tables. Processes opening one new file at the
        same moment (`serve --processes N`) can get "database is locked" at once: SQLite does
        not wait out its busy timeout where waiting could deadlock. Such an open is tried
        again, for up to `busy_timeout` seconds."""
        path = self.options.path
        deadline = time.monotonic() + self.options.busy_timeout
        while True:
            db: sqlite3.Connection | None = None
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
                db.row_factory = sqlite3.Row
                self._wait_for_locks(db, self.options.busy_timeout)
                db.execute("PRAGMA journal_mode = WAL")
                db.execute("PRAGMA synchronous = FULL")
                db.execute("PRAGMA foreign_keys = ON")
                db.executescript(SCHEMA)
                self._add_feed(db)
                break
            except (OSError, sqlite3.Error) as exc:
                if db is not None:
                    db.close()
                busy = getattr(exc, "sqlite_errorcode", None) in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)
                if not busy or time.monotonic() > deadline:
                    raise StorageSetupError(f"cannot open SQLite database {path}: {exc}") from None
                time.sleep(random.uniform(0.01, 0.05))  # apart from the others now trying again
        self._db = db

    @staticmethod
    def _add_feed(db: sqlite3.Connection) -> None:
        """Bring a database made before the change feed up to date, in one transaction."""
        db.execute("BEGIN IMMEDIATE")
        try:
            for table, columns in FEED_COLUMNS.items():
                present = {row["name"] for row in db.execute(f"PRAGMA table_info({table})")}
                for column, spec in columns.items():
                    if column not in present:
                        db.execute(f"ALTER TABLE {table} ADD COLUMN {column} {spec}")
            db.execute(FEED_INDEX)
            for (department_id,) in db.execute("SELECT id FROM departments WHERE epoch = ''").fetchall():
                # Number its events in creation order: the feed starts with what is there.
                ids = [row[0] for row in db.execute(
                    "SELECT id FROM events WHERE department_id = ? ORDER BY created_at, id", (department_id,))]
                db.executemany("UPDATE events SET seq = ? WHERE id = ?", [(n, i) for n, i in enumerate(ids, 1)])
                db.execute("UPDATE departments SET epoch = ?, seq = ? WHERE id = ?",
                           (new_epoch(), len(ids), department_id))
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")

    @staticmethod
    def _wait_for_locks(db: sqlite3.Connection, seconds: float) -> None:
        db.execute(f"PRAGMA busy_timeout = {int(seconds * 1000)}")

    async def create_tables(self) -> list[str]:
        existed = self.options.path.exists()
        await self.open()
        state = "schema checked" if existed else "created with schema"
        return [f"SQLite database {self.options.path}: {state}"]

    async def ping(self) -> None:
        """Ready means a write could be made now: the write lock can be taken (without
        waiting long for it) and the file has room to grow, on its disk and within
        SQLite's page limit."""
        def probe(db: sqlite3.Connection) -> None:
            self._wait_for_locks(db, PING_WAIT_SECONDS)
            try:
                db.execute("BEGIN IMMEDIATE")
                db.execute("ROLLBACK")
            finally:
                self._wait_for_locks(db, self.options.busy_timeout)
            pages, limit, page_size = (db.execute(f"PRAGMA {name}").fetchone()[0]
                                       for name in ("page_count", "max_page_count", "page_size"))
            disk = os.statvfs(self.options.path.parent)
            if (limit - pages) * page_size < MIN_ROOM_BYTES or disk.f_bavail * disk.f_frsize < MIN_ROOM_BYTES:
                raise StorageUnavailable()

        await self._call(probe)

    async def close(self) -> None:
        if self._db is not None:
            await self.run(self._db.close)
            self._db = None
        await self.shutdown_threads()

    async def _call(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        return await self.run(self._connected, fn)

    def _connected(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        if self._db is None:
            raise StorageUnavailable()
        return fn(self._db)

    def unavailable(self, error: BaseException) -> bool:
        # Disk full, I/O error, locked past busy_timeout: a passing outage, not a bug.
        return isinstance(error, sqlite3.OperationalError)

    async def _transaction(self, fn: Callable[[sqlite3.Connection], T], mode: str = "IMMEDIATE") -> T:
        """Run `fn` inside one transaction: all of it commits, or none. Writes share commits
        with the writes queued beside them (`GroupCommit`); reads use a DEFERRED transaction
        of their own, which is one consistent snapshot of the database."""
        if mode == "IMMEDIATE":
            return await self._group.write(fn)

        def transaction(db: sqlite3.Connection) -> T:
            db.execute(f"BEGIN {mode}")
            try:
                result = fn(db)
                db.execute("COMMIT")  # may fail too (disk full): then nothing of it stays
            except BaseException:
                if db.in_transaction:
                    db.execute("ROLLBACK")
                raise
            return result

        return await self._call(transaction)

    @staticmethod
    def _select_events(db: sqlite3.Connection, sql: str, parameters: tuple) -> list[Event]:
        """Events from plain tuples: for thousands of rows, several times cheaper than
        `sqlite3.Row` and keyword arguments (the columns are in the dataclass's order)."""
        cursor = db.cursor()
        cursor.row_factory = None
        return [Event(*row) for row in cursor.execute(sql, parameters)]

    # -- the feed, inside a transaction -------------------------------------------------------
    @staticmethod
    def _next_seq(db: sqlite3.Connection, department_id: str) -> int:
        row = db.execute("UPDATE departments SET seq = seq + 1 WHERE id = ? RETURNING seq", (department_id,)).fetchone()
        if row is None:
            raise DepartmentNotFound()
        return row[0]

    @staticmethod
    def _state(db: sqlite3.Connection, department_id: str) -> FeedState:
        row = db.execute("SELECT epoch, seq, horizon FROM departments WHERE id = ?", (department_id,)).fetchone()
        if row is None:
            raise DepartmentNotFound()
        return FeedState(row["epoch"], row["seq"], row["horizon"])

    def _kept(self, db: sqlite3.Connection, key: IdempotencyKey | None) -> StoredCreate | None:
        if key is None:
            return None
        row = db.execute("SELECT fingerprint, kind, record, expires_at FROM idempotency WHERE name = ?",
                         (key.name,)).fetchone()
        if row is None:
            return None
        stored = StoredCreate(row["fingerprint"], row["kind"], json.loads(row["record"]), row["expires_at"])
        return stored if stored.live(self.clock()) else None

    def _keep(self, db: sqlite3.Connection, key: IdempotencyKey | None, change: Change,
              department_id: str | None) -> None:
        if key is not None:
            stored = StoredCreate.of(key, change, self.clock())
            db.execute("INSERT OR REPLACE INTO idempotency (name, department_id, fingerprint, kind, record, expires_at)"
                       " VALUES (?, ?, ?, ?, ?, ?)",
                       (key.name, department_id, stored.fingerprint, stored.kind,
                        json.dumps(stored.record, ensure_ascii=False), stored.expires_at))

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

    async def create_department(self, name: str, description: str = "",
                                idempotency: IdempotencyKey | None = None) -> Change:
        department = Department.new(name, description)

        def insert(db: sqlite3.Connection) -> Change:
            stored = self._kept(db, idempotency)
            if stored is not None:
                return stored.replay(idempotency)
            try:
                db.execute(f"INSERT INTO departments ({DEPARTMENT_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?)",
                           _department_row(department))
            except sqlite3.IntegrityError:
                raise DuplicateDepartmentName() from None
            change = Change(Kind.DEPARTMENT_CREATED, department)
            self._keep(db, idempotency, change, None)
            return change

        return await self._transaction(insert)

    async def update_department(self, department_id: str, changes: Mapping[str, Any]) -> Change:
        def update(db: sqlite3.Connection) -> Change:
            department = self._department(db, department_id).updated(changes)
            try:
                db.execute("UPDATE departments SET name = ?, description = ?, updated_at = ? WHERE id = ?",
                           (department.name, department.description, department.updated_at, department_id))
            except sqlite3.IntegrityError:
                raise DuplicateDepartmentName() from None
            return Change(Kind.DEPARTMENT_UPDATED, department)

        return await self._transaction(update)

    async def delete_department(self, department_id: str) -> Change:
        def delete(db: sqlite3.Connection) -> Change:
            department = self._department(db, department_id)
            db.execute("DELETE FROM events WHERE department_id = ?", (department_id,))
            db.execute("DELETE FROM departments WHERE id = ?", (department_id,))
            return Change(Kind.DEPARTMENT_DELETED, department)

        return await self._transaction(delete)

    # -- events ---------------------------------------------------------------------------
    async def list_events(
        self, department_id: str, date_from: str | None = None, date_to: str | None = None
    ) -> list[Event]:
        def select(db: sqlite3.Connection) -> list[Event]:
            self._department(db, department_id)
            return self._select_events(
                db, f"SELECT {EVENT_COLUMNS} FROM events WHERE department_id = ?"
                " AND event_date >= ? AND event_date <= ? " + EVENT_ORDER,
                (department_id, date_from or "", date_to or "\U0010ffff"))

        return await self._transaction(select, "DEFERRED")

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

    async def create_event(self, department_id: str, fields: Mapping[str, Any],
                           idempotency: IdempotencyKey | None = None) -> Change:
        def insert(db: sqlite3.Connection) -> Change:
            stored = self._kept(db, idempotency)
            if stored is not None:
                return stored.replay(idempotency)
            event = dataclasses.replace(Event.new(department_id, fields), seq=self._next_seq(db, department_id))
            db.execute(f"INSERT INTO events ({EVENT_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?,?)", _event_row(event))
            change = Change(Kind.EVENT_CREATED, event, event.seq)
            self._keep(db, idempotency, change, department_id)
            return change

        return await self._transaction(insert)

    @staticmethod
    def _version_check(if_versions: Collection[int] | None) -> tuple[str, tuple[int, ...]]:
        """The SQL that makes `If-Match` part of the write itself."""
        if if_versions is None:
            return "", ()
        versions = tuple(int(v) for v in if_versions)
        return f" AND version IN ({', '.join('?' * len(versions))})" if versions else " AND 0", versions

    async def update_event(self, event_id: str, changes: Mapping[str, Any],
                           if_versions: Collection[int] | None = None) -> Change:
        condition, versions = self._version_check(if_versions)

        def update(db: sqlite3.Connection) -> Change:
            current = self._event(db, event_id)
            event = dataclasses.replace(current.updated(changes), seq=self._next_seq(db, current.department_id))
            written = db.execute(
                "UPDATE events SET event_date=?, title=?, description=?, time=?, url=?,"
                " last_modified=?, version=?, seq=? WHERE id=?" + condition,
                (event.event_date, event.title, event.description, event.time, event.url,
                 event.last_modified, event.version, event.seq, event.id, *versions),
            ).rowcount
            if not written:
                raise VersionConflict(current)  # the transaction rolls back the seq taken
            return Change(Kind.EVENT_UPDATED, event, event.seq)

        return await self._transaction(update)

    async def delete_event(self, event_id: str, if_versions: Collection[int] | None = None) -> Change:
        condition, versions = self._version_check(if_versions)

        def delete(db: sqlite3.Connection) -> Change:
            event = self._event(db, event_id)
            if not db.execute("DELETE FROM events WHERE id = ?" + condition, (event_id, *versions)).rowcount:
                raise VersionConflict(event)
            seq = self._next_seq(db, event.department_id)
            db.execute("INSERT INTO tombstones (department_id, seq, id, deleted_at) VALUES (?, ?, ?, ?)",
                       (event.department_id, seq, event_id, self.clock()))
            return Change(Kind.EVENT_DELETED, event, seq)

        return await self._transaction(delete)

    # -- the feed -------------------------------------------------------------------------
    async def feed_state(self, department_id: str) -> FeedState:
        return await self._call(lambda db: self._state(db, department_id))

    async def read_feed(self, department_id: str, cursor: Cursor | None = None,
                        limit: int | None = None) -> FeedPage:
        def read(db: sqlite3.Connection) -> FeedPage:
            state = self._state(db, department_id)
            if cursor is None or not cursor.usable(state):
                events = self._select_events(
                    db, f"SELECT {EVENT_COLUMNS} FROM events WHERE department_id = ? " + EVENT_ORDER, (department_id,))
                return full_page(department_id, state, events)
            most = -1 if limit is None else limit + 1  # one more than fits tells whether there is more
            events = self._select_events(db, f"SELECT {EVENT_COLUMNS} FROM events WHERE department_id = ? AND seq > ?"
                                         " ORDER BY seq LIMIT ?", (department_id, cursor.since, most))
            tombstones = db.execute("SELECT id, seq FROM tombstones WHERE department_id = ? AND seq > ?"
                                    " ORDER BY seq LIMIT ?", (department_id, cursor.since, most)).fetchall()
            return changes_page(department_id, state, cursor.since, events,
                                [Tombstone(row["id"], row["seq"]) for row in tombstones], limit)

        return await self._transaction(read, "DEFERRED")

    async def purge(self, tombstone_seconds: float) -> int:
        def purge(db: sqlite3.Connection) -> int:
            now = self.clock()
            cutoff = now - tombstone_seconds
            db.execute("UPDATE departments SET horizon = max(horizon, (SELECT max(seq) FROM tombstones t"
                       " WHERE t.department_id = departments.id AND t.deleted_at < ?))"
                       " WHERE id IN (SELECT department_id FROM tombstones WHERE deleted_at < ?)", (cutoff, cutoff))
            purged = db.execute("DELETE FROM tombstones WHERE deleted_at < ?", (cutoff,)).rowcount
            return purged + db.execute("DELETE FROM idempotency WHERE expires_at <= ?", (now,)).rowcount

        return await self._transaction(purge)

    # -- bulk import ----------------------------------------------------------------------
    async def import_departments(self, records: Sequence[Department]) -> list[str]:
        def write(db: sqlite3.Connection, record: Department) -> None:
            try:
                db.execute(
                    f"INSERT INTO departments ({DEPARTMENT_COLUMNS}) VALUES (?, ?, ?, ?, ?, 0, ?)"
                    " ON CONFLICT (id) DO UPDATE SET name = excluded.name, description = excluded.description,"
                    " created_at = excluded.created_at, updated_at = excluded.updated_at, epoch = excluded.epoch",
                    (*_department_row(record)[:5], new_epoch()),
                )
            except sqlite3.IntegrityError:
                raise DuplicateDepartmentName() from None

        return await self._import(records, self._find_department, write)

    async def import_events(self, records: Sequence[Event]) -> list[str]:
        def write(db: sqlite3.Connection, record: Event) -> None:
            self._department(db, record.department_id)
            record = dataclasses.replace(record, seq=self._next_seq(db, record.department_id))
            db.execute(
                f"INSERT INTO events ({EVENT_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?,?)"
                " ON CONFLICT (id) DO UPDATE SET department_id = excluded.department_id,"
                " event_date = excluded.event_date, title = excluded.title,"
                " description = excluded.description, time = excluded.time, url = excluded.url,"
                " created_at = excluded.created_at, last_modified = excluded.last_modified,"
                " version = excluded.version, seq = excluded.seq",
                _event_row(record),
            )
            db.execute("DELETE FROM tombstones WHERE department_id = ? AND id = ?", (record.department_id, record.id))
            db.execute("UPDATE departments SET epoch = ? WHERE id = ?", (new_epoch(), record.department_id))

        return await self._import(records, self._find_event, write)

    async def _import(self, records: Sequence[Record], read: Callable, write: Callable) -> list[str]:
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
    return (d.id, d.name, d.description, d.created_at, d.updated_at, d.seq, d.epoch)


def _event_row(e: Event) -> tuple:
    return (e.id, e.department_id, e.event_date, e.title, e.description, e.time, e.url,
            e.created_at, e.last_modified, e.version, e.seq)
