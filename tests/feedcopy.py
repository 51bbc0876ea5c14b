"""A client's copy of one department kept from storage's feed pages, checking as it goes
that every (seq -> entry) served keeps its meaning and that answers only move forward."""
from __future__ import annotations

from calsync.storage.feed import Cursor, FeedPage


class FeedCopy:
    def __init__(self) -> None:
        self.events: dict[str, dict] = {}
        self.cursor: Cursor | None = None
        self.served: dict[int, tuple] = {}

    def apply(self, page: FeedPage) -> None:
        if self.cursor is not None and not page.reset:
            assert page.seq >= self.cursor.since, "an answer went back"
        if page.reset:
            self.events = {}
        for event in page.events:
            self._serve(event.seq, (event.id, "put", event.version))
            self.events[event.id] = event.to_dict()
        for tombstone in page.deleted:
            self._serve(tombstone.seq, (tombstone.id, "delete"))
            self.events.pop(tombstone.id, None)
        self.cursor = Cursor(page.seq, page.epoch)

    async def follow(self, storage, department_id: str, limit: int = 3) -> None:
        """Read pages from the cursor until the feed has no more."""
        while True:
            page = await storage.read_feed(department_id, self.cursor, limit)
            self.apply(page)
            if not page.more:
                return

    def _serve(self, seq: int, entry: tuple) -> None:
        assert self.served.setdefault(seq, entry) == entry, f"seq {seq} was {self.served[seq]}, now {entry}"
