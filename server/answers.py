"""Sync answers as JSON, built once per department state (contract 8.5).

A full answer for a department of thousands of events is the same bytes until the
department's seq moves, so the last one of each department is kept encoded and served
again after one cheap look at the feed's state. REST and WebSocket answers share the
encoded fields: `"events": [...], "deleted": [...], "seq", "epoch", "reset", "more"`.
"""
from __future__ import annotations

import json
from collections import OrderedDict
from dataclasses import dataclass

from storage.base import Storage
from storage.feed import Cursor, FeedPage, FeedState

CACHED_DEPARTMENTS = 64


@dataclass(frozen=True)
class Answer:
    """An answer's fields, encoded: `fields` is JSON object members without the braces."""

    epoch: str
    seq: int
    fields: str

    @property
    def etag(self) -> str:
        return etag_of(self.epoch, self.seq)


def etag_of(epoch: str, seq: int) -> str:
    """The list's entity tag: it changes exactly when the department's feed moves."""
    return f'"{epoch}.{seq}"'


def encode(page: FeedPage) -> Answer:
    events = json.dumps([event.to_dict() for event in page.events], ensure_ascii=False)
    deleted = json.dumps([tombstone.to_dict() for tombstone in page.deleted], ensure_ascii=False)
    fields = (f'"events": {events}, "deleted": {deleted}, "seq": {page.seq}, "epoch": {json.dumps(page.epoch)}, '
              f'"reset": {json.dumps(page.reset)}, "more": {json.dumps(page.more)}')
    return Answer(page.epoch, page.seq, fields)


class SyncAnswers:
    def __init__(self, storage: Storage) -> None:
        self._storage = storage
        self._full: OrderedDict[str, Answer] = OrderedDict()  # department id -> its last full answer

    async def state(self, department_id: str) -> FeedState:
        return await self._storage.feed_state(department_id)

    async def full(self, department_id: str, state: FeedState | None = None) -> Answer:
        """Every event: from the kept answer while the feed has not moved."""
        state = state or await self._storage.feed_state(department_id)
        kept = self._full.get(department_id)
        if kept is not None and (kept.epoch, kept.seq) == (state.epoch, state.seq):
            self._full.move_to_end(department_id)
            return kept
        return self._keep(department_id, encode(await self._storage.read_feed(department_id)))

    async def since(self, department_id: str, cursor: Cursor | None, limit: int | None = None,
                    date_from: str | None = None, date_to: str | None = None) -> Answer:
        """The answer to a cursor (a reset when it cannot be used), optionally within dates."""
        if cursor is None and date_from is None and date_to is None:
            return await self.full(department_id)
        page = await self._storage.read_feed(department_id, cursor, limit)
        if page.reset and date_from is None and date_to is None:
            return self._keep(department_id, encode(page))
        return encode(page.within(date_from, date_to))

    def _keep(self, department_id: str, answer: Answer) -> Answer:
        self._full[department_id] = answer
        self._full.move_to_end(department_id)
        while len(self._full) > CACHED_DEPARTMENTS:
            self._full.popitem(last=False)
        return answer
