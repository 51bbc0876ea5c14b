"""The storage interface every backend implements.

The docstrings here are the contract the backends keep; `tests/contract/` checks each of
them against it. Nothing in `storage/` knows about Tornado or HTTP: methods are coroutines
that return records or raise the errors of `storage.errors`.
"""
from __future__ import annotations

import abc
import time
from dataclasses import dataclass
from typing import Any, Callable, ClassVar, Collection, Mapping, Sequence

from calsync.storage.feed import Change, Cursor, FeedPage, FeedState, IdempotencyKey
from calsync.storage.records import Department, Event


@dataclass(frozen=True)
class BackendOptions:
    """A backend's section of `storage:` in the config.

    Subclasses are frozen dataclasses whose annotated fields (`str`, `int`, `bool`, `Path`,
    `list[str]`) the config loader fills and type-checks; `__post_init__` may raise
    `ValueError` for a value out of range. `Path` fields come resolved against the config
    file's folder.
    """


class Storage(abc.ABC):
    """A place that keeps departments and their events.

    A backend is built from its options (see `options_class`), then `open()`ed once before
    use and `close()`d once at the end. Every write is durable when its coroutine returns:
    the server acknowledges a change only after that.
    """

    #: The dataclass that holds this backend's options (its section of `storage:`).
    options_class: ClassVar[type[BackendOptions]] = BackendOptions

    def __init__(self, options: BackendOptions) -> None:
        self.options = options
        #: Wall-clock seconds, for everything storage dates (tombstones, key expiry, claims).
        #: One clock, so tests move time instead of sleeping.
        self.clock: Callable[[], float] = time.time
        #: `sync.gap_seconds`: how long a change in flight may hold answers (contract 12.2).
        self.gap_seconds = 2.0

    # -- life cycle -----------------------------------------------------------------------
    @abc.abstractmethod
    async def open(self) -> None:
        """Make the store ready to serve.

        Embedded backends create their file or folder and schema here, so a fresh machine
        needs no preparation; remote ones check that what they need exists. Raises
        `StorageSetupError` with one line for the operator when the store cannot be used.
        """

    async def create_tables(self) -> list[str]:
        """Prepare the store (`calsync create-tables`) and say what was done, a line each."""
        await self.open()
        return [f"{self.describe()}: ready"]

    @abc.abstractmethod
    async def ping(self) -> None:
        """Return when the store answers; raise `StorageUnavailable` when it does not."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Release files, connections and threads. Safe to call twice."""

    def describe(self) -> str:
        """Where the data lives, for log lines and `GET /`."""
        return type(self).__name__

    # -- departments ----------------------------------------------------------------------
    @abc.abstractmethod
    async def list_departments(self) -> list[Department]:
        """Every department, sorted by name (code-point order), each with its feed's seq and epoch."""

    @abc.abstractmethod
    async def get_department(self, department_id: str) -> Department:
        """The department, or `DepartmentNotFound`."""

    @abc.abstractmethod
    async def create_department(self, name: str, description: str = "",
                                idempotency: IdempotencyKey | None = None) -> Change:
        """Store a new department (`Department.new`, which starts its feed with a new epoch).

        Names are unique: when another department holds `name` — even one created at the
        same moment by another request or process — raise `DuplicateDepartmentName`.

        With `idempotency`, the create and its key are kept together: a repeat of a kept key
        returns the kept change with `replayed=True` and writes nothing; the key with another
        fingerprint raises `IdempotencyMismatch`; a create that fails keeps no key.
        """

    @abc.abstractmethod
    async def update_department(self, department_id: str, changes: Mapping[str, Any]) -> Change:
        """Apply `Department.updated(changes)`; names stay unique (`DuplicateDepartmentName`)
        under concurrent edits too. Raises `DepartmentNotFound`."""

    @abc.abstractmethod
    async def delete_department(self, department_id: str) -> Change:
        """Delete the department, every one of its events and its feed; the change holds the
        department as it was. Raises `DepartmentNotFound`."""

    # -- events ---------------------------------------------------------------------------
    @abc.abstractmethod
    async def list_events(
        self, department_id: str, date_from: str | None = None, date_to: str | None = None
    ) -> list[Event]:
        """The department's events with `date_from <= event_date <= date_to` (either bound
        optional), sorted by `Event.sort_key`. Raises `DepartmentNotFound`."""

    @abc.abstractmethod
    async def get_event(self, event_id: str) -> Event:
        """The event, or `EventNotFound`."""

    @abc.abstractmethod
    async def create_event(self, department_id: str, fields: Mapping[str, Any],
                           idempotency: IdempotencyKey | None = None) -> Change:
        """Store `Event.new(department_id, fields)`; `fields` are validated client fields.

        The event takes its department's next seq in the same atomic write. `idempotency`
        as for `create_department`. Raises `DepartmentNotFound`.
        """

    @abc.abstractmethod
    async def update_event(self, event_id: str, changes: Mapping[str, Any],
                           if_versions: Collection[int] | None = None) -> Change:
        """Apply `Event.updated(changes)` with the department's next seq, atomically (no lost
        update when two run at once). With `if_versions`, the check that the stored version
        is among them and the write are one step: otherwise `VersionConflict` carrying the
        current event, and nothing changes. Raises `EventNotFound`."""

    @abc.abstractmethod
    async def delete_event(self, event_id: str, if_versions: Collection[int] | None = None) -> Change:
        """Delete the event, leaving a tombstone with the department's next seq; the change
        holds the event as it was. `if_versions` as for `update_event`. Raises `EventNotFound`."""

    # -- the change feed ------------------------------------------------------------------
    @abc.abstractmethod
    async def feed_state(self, department_id: str) -> FeedState:
        """Where the department's feed stands. Raises `DepartmentNotFound`."""

    @abc.abstractmethod
    async def read_feed(self, department_id: str, cursor: Cursor | None = None,
                        limit: int | None = None) -> FeedPage:
        """The answer to `cursor` as one consistent snapshot (`storage.feed.answer`): every
        change up to the page's seq is in it and none after. An incremental answer holds at
        most `limit` items (None: all). Raises `DepartmentNotFound`."""

    @abc.abstractmethod
    async def purge(self, tombstone_seconds: float) -> int:
        """Drop tombstones older than `tombstone_seconds` (raising each department's horizon
        to the highest seq dropped) and idempotency keys past their time; say how many."""

    # -- bulk import (migration) ----------------------------------------------------------
    @abc.abstractmethod
    async def import_departments(self, records: Sequence[Department]) -> list[str]:
        """Write departments exactly as given (ids, timestamps), one outcome per record:
        `"created"`, `"updated"` (same id, other fields differ) or `"unchanged"`. A department
        written starts a new epoch: its feed's history was replaced.

        Raises `DuplicateDepartmentName` when another id already holds a record's name.
        """

    @abc.abstractmethod
    async def import_events(self, records: Sequence[Event]) -> list[str]:
        """Write events exactly as given (ids, timestamps, versions); outcomes as for
        `import_departments`. Their departments must exist (`DepartmentNotFound`). Each event
        written takes its department's next seq, and the department starts a new epoch.

        A record replaces the stored event with its id in the same department. An event
        moving to another department must be deleted first (the migration does): finding
        it elsewhere would cost a lookup per record on DynamoDB, where the key holds the
        department.
        """

