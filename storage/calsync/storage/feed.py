"""What a stored change is, and the rules of a department's change feed (contract section 8).

A write returns a `Change`; the server publishes it from one place. A read of the feed
returns a `FeedPage`: the answer to "what changed since my cursor", decided by the rules
here so every backend answers alike.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Sequence

from calsync.storage.errors import IdempotencyMismatch
from calsync.storage.records import Department, Event

#: Most items in one incremental answer, whatever `limit` asks (the contract allows ≥ 1,000).
#: Storage takes `limit=None` as "no limit"; the protocol layer applies this cap.
MAX_PAGE = 1000



class Kind:
    """What a change did; also the name of the push it becomes."""

    DEPARTMENT_CREATED = "department_created"
    DEPARTMENT_UPDATED = "department_updated"
    DEPARTMENT_DELETED = "department_deleted"
    EVENT_CREATED = "event_created"
    EVENT_UPDATED = "event_updated"
    EVENT_DELETED = "event_deleted"


@dataclass(frozen=True)
class Change:
    """One stored change: what a write returns and what the publisher turns into a push.

    `record` is the department or event after the change (for a delete: as it was). `seq` is
    the change's place in its department's feed (0 for department-level changes, which are
    not in a feed). `replayed` marks the stored answer of an idempotent repeat: nothing was
    written and nothing is to be published.
    """

    kind: str
    record: Any
    seq: int = 0
    replayed: bool = False

    @property
    def department_id(self) -> str:
        return self.record.department_id if isinstance(self.record, Event) else self.record.id


@dataclass(frozen=True)
class Tombstone:
    """What is left of a deleted event: its id and the seq of its deletion."""

    id: str
    seq: int
    deleted_at: float = field(default=0.0, compare=False)  # Unix time, for purging

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "seq": self.seq}


@dataclass(frozen=True)
class FeedState:
    """Where a department's feed stands: its epoch, latest seq, and highest purged seq."""

    epoch: str
    seq: int
    horizon: int = 0


@dataclass(frozen=True)
class Cursor:
    """What a client holds: every change up to `since` of the feed `epoch` is in its copy."""

    since: int
    epoch: str | None = None

    def usable(self, state: FeedState) -> bool:
        """Whether the feed can answer change by change; otherwise the answer is a reset."""
        return self.epoch == state.epoch and state.horizon <= self.since <= state.seq


@dataclass(frozen=True)
class FeedPage:
    """An answer to `sync_request` / `GET /api/events/{id}?since=` (contract 8.5)."""

    department_id: str
    epoch: str
    seq: int
    reset: bool
    events: Sequence[Event]
    deleted: Sequence[Tombstone] = ()
    more: bool = False

    def within(self, date_from: str | None, date_to: str | None) -> "FeedPage":
        if date_from is None and date_to is None:
            return self
        events = [e for e in self.events if e.within(date_from, date_to)]
        return FeedPage(self.department_id, self.epoch, self.seq, self.reset, events, self.deleted, self.more)


def full_page(department_id: str, state: FeedState, events: Iterable[Event]) -> FeedPage:
    """Every event, in REST order: the answer without a usable cursor."""
    return FeedPage(department_id, state.epoch, state.seq, True, sorted(events, key=Event.sort_key))


def changes_page(department_id: str, state: FeedState, since: int, changed: Iterable[Event],
                 tombstones: Iterable[Tombstone], limit: int | None) -> FeedPage:
    """The events and tombstones with seq above `since`, in seq order, cut at `limit` items
    (None: all of them).

    When cut, the answer's seq is that of its last item, so asking again from it continues
    exactly where this answer stopped.
    """
    items: list[Event | Tombstone] = sorted([*(e for e in changed if e.seq > since), *(t for t in tombstones if t.seq > since)],
                   key=lambda item: item.seq)
    more = limit is not None and len(items) > limit
    if more:
        items = items[:limit]
    seq = items[-1].seq if more else state.seq
    events = [item for item in items if isinstance(item, Event)]
    deleted = [item for item in items if isinstance(item, Tombstone)]
    return FeedPage(department_id, state.epoch, seq, False, events, deleted, more)


def answer(department_id: str, state: FeedState, cursor: Cursor | None, events: Iterable[Event],
           tombstones: Iterable[Tombstone], limit: int | None) -> FeedPage:
    """The feed's answer to `cursor`, for backends that hold the whole department at hand."""
    if cursor is None or not cursor.usable(state):
        return full_page(department_id, state, events)
    return changes_page(department_id, state, cursor.since, events, tombstones, limit)


def expired(deleted_at: float, keep_seconds: float, now: float) -> bool:
    return deleted_at < now - keep_seconds


# -- idempotent creates (contract 8.3) -----------------------------------------------------
@dataclass(frozen=True)
class IdempotencyKey:
    """A create's `Idempotency-Key`, with what it is kept under and what it must match.

    `scope` is the path (and, with auth on, the token subject); `fingerprint` identifies the
    request body, so the same key with another body is refused, never replayed.
    """

    scope: str
    key: str
    fingerprint: str
    keep_seconds: float

    @classmethod
    def for_request(cls, scope: str, key: str, fields: Mapping[str, Any], keep_seconds: float) -> "IdempotencyKey":
        canonical = json.dumps(fields, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
        return cls(scope, key, hashlib.sha256(canonical.encode("utf-8")).hexdigest(), keep_seconds)

    @property
    def name(self) -> str:
        """One string for both parts, for stores keyed by a single value."""
        return f"{self.scope}\n{self.key}"

    def expires_at(self, now: float) -> float:
        return now + self.keep_seconds


@dataclass(frozen=True)
class StoredCreate:
    """A create kept under its idempotency key: enough to answer a repeat exactly as before."""

    fingerprint: str
    kind: str
    record: dict[str, Any]
    expires_at: float

    def to_dict(self) -> dict[str, Any]:
        return {"fingerprint": self.fingerprint, "kind": self.kind, "record": self.record,
                "expires_at": self.expires_at}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "StoredCreate":
        return cls(data["fingerprint"], data["kind"], dict(data["record"]), float(data["expires_at"]))

    @classmethod
    def of(cls, key: IdempotencyKey, change: Change, now: float) -> "StoredCreate":
        return cls(key.fingerprint, change.kind, change.record.to_dict(), key.expires_at(now))

    def replay(self, key: IdempotencyKey | None) -> Change:
        """The kept answer, or `IdempotencyMismatch` when the key came with another body."""
        if key is None or key.fingerprint != self.fingerprint:
            raise IdempotencyMismatch()
        record_class = Department if self.kind == Kind.DEPARTMENT_CREATED else Event
        record = record_class.from_dict(self.record)
        return Change(self.kind, record, getattr(record, "seq", 0), replayed=True)

    def live(self, now: float) -> bool:
        return self.expires_at > now
