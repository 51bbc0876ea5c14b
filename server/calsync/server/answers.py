"""Sync answers as JSON, kept up to date instead of rebuilt (contract 8.5).

A full answer for a department of thousands of events is mostly the same bytes after a
change, so each recently asked department is kept as its events' encoded JSON, by id.
When its feed moves, only the changes since the kept seq are read and re-encoded, and the
answer is joined again; nothing is read while it has not moved. Answers are encoded with
orjson: on thousands of records it is several times faster than the standard library, and
it writes an `Event` dataclass field by field, as `Event.to_dict` would.

REST and WebSocket answers share the encoded fields:
`"events": [...], "deleted": [...], "seq", "epoch", "reset", "more"`.
"""
from __future__ import annotations

import bisect
import json
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import orjson

from calsync.storage.base import Storage
from calsync.storage.feed import Cursor, FeedPage, FeedState

#: Departments kept encoded (least recently asked for goes first).
CACHED_DEPARTMENTS = 32


@dataclass(frozen=True)
class Answer:
    """An answer's fields, encoded: `fields` is JSON object members without the braces."""

    epoch: str
    seq: int
    fields: bytes

    @property
    def etag(self) -> str:
        return etag_of(self.epoch, self.seq)

    def json(self, **members: Any) -> bytes:
        """The answer as one JSON object: `members` first, then the answer's own fields (REST:
        `success`; the WebSocket: `department_id`, `message`). The fields, which may be
        megabytes, are copied once and never re-encoded."""
        head = b"".join(_member(name, value) + b", " for name, value in members.items())
        return b"".join((b"{", head, self.fields, b"}"))


def _member(name: str, value: Any) -> bytes:
    return json.dumps(name).encode() + b": " + json.dumps(value, ensure_ascii=False).encode("utf-8")


def etag_of(epoch: str, seq: int) -> str:
    """The list's entity tag: it changes exactly when the department's feed moves."""
    return f'"{epoch}.{seq}"'


def _fields(events: bytes, page: FeedPage) -> bytes:
    deleted = orjson.dumps([tombstone.to_dict() for tombstone in page.deleted])
    tail = b', "deleted": %s, "seq": %d, "epoch": %s, "reset": %s, "more": %s' % (
        deleted, page.seq, orjson.dumps(page.epoch), b"true" if page.reset else b"false",
        b"true" if page.more else b"false")
    return b"".join((b'"events": ', events, tail))  # one copy of what may be megabytes


def encode(page: FeedPage) -> Answer:
    return Answer(page.epoch, page.seq, _fields(orjson.dumps(list(page.events)), page))


class DepartmentCopy:
    """A department's events, each kept as its encoded JSON, at one seq of its feed."""

    def __init__(self, page: FeedPage) -> None:
        self.epoch = page.epoch
        self.seq = page.seq
        self._answer: Answer | None = None
        # The events' sort keys in REST order, their JSON in the same order, and id -> key.
        events = sorted(page.events, key=lambda event: event.sort_key())
        self._order = [event.sort_key() for event in events]
        self._texts = [orjson.dumps(event) for event in events]
        self.keys = {event.id: key for event, key in zip(events, self._order, strict=True)}

    def _remove(self, event_id: str) -> None:
        key = self.keys.pop(event_id, None)
        if key is not None:
            at = bisect.bisect_left(self._order, key)
            del self._order[at], self._texts[at]

    def apply(self, page: FeedPage) -> None:
        """Bring the copy to `page.seq` with an incremental page read from its seq (or older)."""
        if page.seq <= self.seq:
            return  # another request brought it further already
        for event in page.events:
            self._remove(event.id)
            key = self.keys[event.id] = event.sort_key()
            at = bisect.bisect_left(self._order, key)
            self._order.insert(at, key)
            self._texts.insert(at, orjson.dumps(event))
        for tombstone in page.deleted:
            self._remove(tombstone.id)
        self.seq = page.seq
        self._answer = None

    def answer(self) -> Answer:
        if self._answer is None:
            events = b"".join((b"[", b", ".join(self._texts), b"]"))
            page = FeedPage("", self.epoch, self.seq, True, ())
            self._answer = Answer(self.epoch, self.seq, _fields(events, page))
        return self._answer


class SyncAnswers:
    def __init__(self, storage: Storage) -> None:
        self._storage = storage
        self._copies: OrderedDict[str, DepartmentCopy] = OrderedDict()

    async def state(self, department_id: str) -> FeedState:
        return await self._storage.feed_state(department_id)

    async def full(self, department_id: str, state: FeedState | None = None) -> Answer:
        """Every event, in REST order: from the kept copy, brought up to the feed's seq."""
        state = state or await self._storage.feed_state(department_id)
        copy = self._copies.get(department_id)
        if copy is not None and copy.epoch == state.epoch:
            if copy.seq < state.seq:
                page = await self._storage.read_feed(department_id, Cursor(copy.seq, copy.epoch))
                if not page.reset:
                    copy.apply(page)
                    return self._keep(department_id, copy).answer()
                return self._keep(department_id, DepartmentCopy(page)).answer()
            return self._keep(department_id, copy).answer()
        return self._keep(department_id, DepartmentCopy(await self._storage.read_feed(department_id))).answer()

    async def since(self, department_id: str, cursor: Cursor | None, limit: int | None = None,
                    date_from: str | None = None, date_to: str | None = None) -> Answer:
        """The answer to a cursor (a reset when it cannot be used), optionally within dates."""
        if cursor is None and date_from is None and date_to is None:
            return await self.full(department_id)
        page = await self._storage.read_feed(department_id, cursor, limit)
        if page.reset and date_from is None and date_to is None:
            return self._keep(department_id, DepartmentCopy(page)).answer()
        return encode(page.within(date_from, date_to))

    def _keep(self, department_id: str, copy: DepartmentCopy) -> DepartmentCopy:
        current = self._copies.get(department_id)
        if current is not None and current is not copy and current.epoch == copy.epoch and current.seq > copy.seq:
            copy = current  # a request that read later already kept a newer copy
        self._copies[department_id] = copy
        self._copies.move_to_end(department_id)
        while len(self._copies) > CACHED_DEPARTMENTS:
            self._copies.popitem(last=False)
        return copy
