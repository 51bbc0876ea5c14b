"""The change feed on DynamoDB: exact through faults and across processes (contract 12.2).

Items of the change table, under the department's id (`D`) and a seq:

    D, seq     a change: kind (put | delete | noop), the event id, the event as it became
               (put), `prev` (the seq of the put it replaces), and a state:
               pending -> done, or pending -> noop (it did not happen)
    D#deleted, seq   a tombstone: the id of an event deleted by a done change, and when

The department item counts seqs (`seq`, an atomic ADD) and keeps `committed`, a mark below
which every change is resolved.

A write (create, update, delete of event E):
  0. an update or delete marks done the change whose seq E carries, if still pending (E's
     write happened; left pending, a reader could later call it a noop once this write has
     replaced E, and this write's `prev` would then point at nothing to remove);
  1. take seq s; put (D, s) pending, on condition that s is free (a reader that gave up on a
     dead writer may have closed it as a noop: then take another seq);
  2. write E in the events table on condition of its version (If-Match) and of its fence:
     `fence < s`, where every event write leaves fence = its seq;
  3. a delete writes its tombstone (D#deleted, s);
  4. mark (D, s) done, on condition it is still pending.
A write whose event write loses the version race marks its change noop and tries again (or
answers 412). Nothing is ever served before it is done, so nothing served is ever voided.

A reader answers up to the committed position W: the seqs above `committed` are read in
order, and W stops before the first one still pending or not yet written. A change that
stays so for `gap_seconds` (by this reader's own clock) belonged to a writer that died or
stalls: the reader resolves it. A missing seq is closed with a noop (conditionally, so the
writer's late put fails and it takes a new seq). A pending one is decided by fencing E first
— `fence = s`, so the writer's event write, if it comes later, fails and the writer retries
under a new seq — and then reading E: a put whose event now carries seq s, or a delete
whose event is gone, did happen (done); anything else did not (noop). An event write that
happened and was then replaced by a later change is marked noop: the later change carries
the whole event, so no client's copy differs. Readers never sleep on a gap: an answer
simply stops below it, and other departments are never held.

Whoever moves `committed` forward (a conditional update elects one reader) removes what no
answer needs any more: noops, done deletes (their tombstones live under D#deleted) and the
puts that later changes replaced. So a full answer reads the department's current events and
the few changes in flight, not its history; an incremental answer reads what changed since
its cursor, at most `limit` items of each kind. Purging drops tombstones older than
`sync.tombstone_days` by this process's clock; a host whose clock is off only moves when an
old cursor is answered with a reset, never what any answer contains.
"""
from __future__ import annotations

import dataclasses
import time
from typing import Any, Callable

from calsync.storage.dynamodb.base import DynamoParts
from calsync.storage.dynamodb.items import applied, batch_write, first_items, from_item, pages, to_item
from calsync.storage.errors import DepartmentNotFound, EventNotFound, StorageUnavailable
from calsync.storage.feed import Cursor, FeedPage, FeedState, Tombstone, changes_page, full_page
from calsync.storage.records import Department, Event

PUT, DELETE, NOOP = "put", "delete", "noop"
PENDING, DONE = "pending", "done"
TOMBSTONES = "#deleted"  # suffix of the partition that holds a department's tombstones
UPDATE_ATTEMPTS = 10
#: Most seqs above the committed mark one read looks at (the changes in flight).
FRONTIER_PAGE = 500


@dataclasses.dataclass
class Frontier:
    """Where a department's feed stands for one read."""

    department: Department
    horizon: int
    top: int  # W: every change up to it is resolved
    blocked: int | None  # the first seq above W, pending or not yet written (None: W is the count)


class FeedPart(DynamoParts):
    gap_seconds: float
    #: (department, seq) -> when this process first saw it holding the feed (time.monotonic()).
    _first_seen: dict[tuple[str, int], float]

    # -- writing a change -------------------------------------------------------------------
    def _take_seq(self, department_id: str, count: int = 1) -> int:
        """Count `count` changes on the department; the last seq taken."""
        try:
            answer = self.client.update_item(
                TableName=self.departments_table, Key=to_item({"id": department_id}),
                UpdateExpression="ADD seq :n", ConditionExpression="attribute_exists(id)",
                ExpressionAttributeValues=to_item({":n": count}), ReturnValues="UPDATED_NEW")
        except self.client.exceptions.ConditionalCheckFailedException:
            raise DepartmentNotFound() from None
        return int(answer["Attributes"]["seq"]["N"])

    def _change_key(self, partition: str, seq: int) -> dict[str, Any]:
        return to_item({"department_id": partition, "seq": seq})

    def _begin(self, department_id: str, kind: str, event_id: str, prev: int,
               record_at: Callable[[int], Event | None]) -> int:
        """Take the next seq and put the change under it, pending; the seq."""
        for _ in range(UPDATE_ATTEMPTS):
            seq = self._take_seq(department_id)
            record = record_at(seq)
            if self._put_pending(department_id, seq, kind, event_id, prev, record):
                return seq
        raise StorageUnavailable()

    def _put_pending(self, department_id: str, seq: int, kind: str, event_id: str, prev: int,
                     record: Event | None) -> bool:
        """Step 1's put; False when a reader closed `seq` first (the writer takes another).

        A reader closes a seq with a noop, and once the committed mark has passed it the noop
        is removed, so a writer slow enough could put into the emptied seq: it checks the mark
        after its put, and takes its put back when the mark has passed."""
        writer = f"{id(self)}.{seq}.{time.monotonic_ns()}"
        item = {"department_id": department_id, "seq": seq, "kind": kind, "id": event_id, "prev": prev,
                "state": PENDING, "writer": writer}
        if record is not None:
            item["record"] = record.to_dict()
        if not applied(lambda: self.client.put_item(TableName=self.changes_table, Item=to_item(item),
                                                    ConditionExpression="attribute_not_exists(seq)")):
            held = self._change(department_id, seq)
            if held is None or held.get("writer") != writer:
                return False
            # else our own put, retried by botocore after its answer was lost
        if int(self._department_item(department_id).get("committed", 0)) >= seq:
            applied(lambda: self.client.delete_item(
                TableName=self.changes_table, Key=self._change_key(department_id, seq),
                ConditionExpression="writer = :me", ExpressionAttributeValues=to_item({":me": writer})))
            return False
        return True

    def _settle_prev(self, department_id: str, seq: int) -> None:
        """The event read carries seq `seq`, so that change's event write happened: if its
        writer has not marked it done yet, mark it now. Otherwise a reader resolving it after
        this write replaced the event would find no trace of it and call it a noop, and the
        change this write records (`prev` = `seq`) would then not remove the put before it."""
        if seq <= 0:
            return
        held = self._change(department_id, seq)
        if held is not None and held.get("state") == PENDING:
            self._finish(department_id, seq, DONE)

    def _change(self, partition: str, seq: int) -> dict[str, Any] | None:
        item = self.client.get_item(TableName=self.changes_table, Key=self._change_key(partition, seq),
                                    ConsistentRead=True).get("Item")
        return None if item is None else from_item(item)

    def _finish(self, department_id: str, seq: int, state: str) -> str:
        """Resolve a pending change as done or noop; the state it ends in (a reader may have
        resolved it first)."""
        values = {":pending": PENDING, ":state": state}
        if applied(lambda: self.client.update_item(
                TableName=self.changes_table, Key=self._change_key(department_id, seq),
                UpdateExpression="SET #state = :state REMOVE writer", ConditionExpression="#state = :pending",
                ExpressionAttributeNames={"#state": "state"}, ExpressionAttributeValues=to_item(values))):
            return state
        held = self._change(department_id, seq)
        if held is None:
            # A reader resolved it, moved the committed mark past it and removed it (a noop or
            # a done delete), or the department was deleted with its feed.
            self._department_item(department_id)  # DepartmentNotFound in the second case
            return NOOP
        return held["state"]

    def _tombstone(self, department_id: str, seq: int, event_id: str) -> None:
        self.client.put_item(TableName=self.changes_table, Item=to_item(
            {"department_id": department_id + TOMBSTONES, "seq": seq, "id": event_id, "at": int(self.clock())}))

    def _write_event(self, seq: int, current: Event | None, new: Event | None, department_id: str,
                     event_id: str) -> str:
        """Step 2: write the event (None: delete it) under its version and fence.

        Returns "written", "fenced" (a reader resolved this seq: retry under a new one) or
        "lost" (another write changed the event first)."""
        fence = "(attribute_not_exists(fence) OR fence < :seq)"
        values: dict[str, Any] = {":seq": seq}
        if current is None:
            condition = f"attribute_not_exists(id) OR (attribute_not_exists(event_date) AND {fence})"
        else:
            condition = f"version = :seen AND {fence}"
            values[":seen"] = current.version
        key = to_item({"id": event_id, "department_id": department_id})
        if new is None:
            write = lambda: self.client.delete_item(  # noqa: E731
                TableName=self.events_table, Key=key, ConditionExpression=condition,
                ExpressionAttributeValues=to_item(values))
        else:
            write = lambda: self.client.put_item(  # noqa: E731
                TableName=self.events_table, Item=to_item({**new.to_dict(), "fence": seq}),
                ConditionExpression=condition, ExpressionAttributeValues=to_item(values))
        if applied(write):
            return "written"
        now = self._event_item(event_id, department_id)
        if new is not None and now is not None and now.get("seq") == seq and "event_date" in now:
            return "written"  # our own write, retried after its answer was lost
        if new is None and (now is None or "event_date" not in now) and current is not None:
            return "written"  # the event is gone: deleted by this write (or just before it)
        if now is not None and int(now.get("fence", 0)) >= seq:
            return "fenced"
        return "lost"

    def _event_item(self, event_id: str, department_id: str) -> dict[str, Any] | None:
        item = self.client.get_item(TableName=self.events_table, ConsistentRead=True,
                                    Key=to_item({"id": event_id, "department_id": department_id})).get("Item")
        return None if item is None else from_item(item)

    def _apply(self, department_id: str, event_id: str, current: Event | None,
               change: Callable[[Event | None], Event | None]) -> tuple[Event | None, Event | None, int]:
        """Run one event write through the protocol (steps 1-4 above): the event as it was,
        as it became (None: deleted) and the seq.

        `change` makes the new event from the current one (None: delete it), raising when it
        may not be changed (If-Match). When another write changed the event first, the
        current event is read again and `change` runs again; when a reader resolved this seq
        meanwhile, the write runs again under a new seq."""
        creating = current is None
        for _ in range(UPDATE_ATTEMPTS):
            if current is not None:
                self._settle_prev(department_id, current.seq)
            new = change(current)
            prev = current.seq if current is not None else 0
            seq = self._begin(department_id, DELETE if new is None else PUT, event_id, prev,
                              lambda n: None if new is None else dataclasses.replace(new, seq=n))
            if new is not None:
                new = dataclasses.replace(new, seq=seq)
            outcome = self._write_event(seq, current, new, department_id, event_id)
            if outcome == "written":
                if new is None:
                    self._tombstone(department_id, seq, event_id)
                self._finish(department_id, seq, DONE)
                return current, new, seq
            self._finish(department_id, seq, NOOP)
            if outcome == "lost":
                if creating:
                    raise StorageUnavailable()  # a new id already taken: nothing sane to do
                item = self._event_item(event_id, department_id)
                if item is None or "event_date" not in item:
                    raise EventNotFound()
                current = Event.from_dict(item)
        raise StorageUnavailable()

    # -- reading ----------------------------------------------------------------------------
    def _frontier(self, department_id: str) -> Frontier:
        """W, from the department item and the seqs above its committed mark."""
        item = self._department_item(department_id)
        department = Department.from_dict(item)
        horizon, mark, count = int(item.get("horizon", 0)), int(item.get("committed", 0)), int(item.get("seq", 0))
        top = max(mark, horizon)
        if count <= top:
            return Frontier(department, horizon, top, None)
        passed: list[dict[str, Any]] = []
        more = True
        while more and top < count:
            items, more = first_items(self.client, FRONTIER_PAGE, TableName=self.changes_table, ConsistentRead=True,
                                      KeyConditionExpression="department_id = :d AND seq > :top",
                                      ProjectionExpression="#seq, #state, #kind, #id, #prev",
                                      ExpressionAttributeNames={"#seq": "seq", "#state": "state", "#kind": "kind",
                                                                "#id": "id", "#prev": "prev"},
                                      ExpressionAttributeValues=to_item({":d": department_id, ":top": top}))
            for change in items:
                if change["seq"] != top + 1 or change.get("state") == PENDING:
                    more = False
                    break
                top += 1
                passed.append(change)
        blocked = top + 1 if top < count else None
        if top > mark:
            self._advance(department_id, mark, top, passed)
        return Frontier(department, horizon, top, blocked)

    def _advance(self, department_id: str, mark: int, top: int, passed: list[dict[str, Any]]) -> None:
        """Move `committed` to `top`; the one reader that does removes what no answer needs."""
        if not applied(lambda: self.client.update_item(
                TableName=self.departments_table, Key=to_item({"id": department_id}),
                UpdateExpression="SET committed = :top",
                ConditionExpression="attribute_exists(id) AND (attribute_not_exists(committed) OR committed < :top)",
                ExpressionAttributeValues=to_item({":top": top}))):
            return
        replaced = [change["prev"] for change in passed if change.get("state") == DONE and change.get("prev")]
        gone = [change["seq"] for change in passed if change.get("state") != DONE or change["kind"] != PUT]
        # Replaced puts first: a done delete must outlive the put it deleted.
        for seqs in (replaced, gone):
            batch_write(self.client, self.changes_table, [
                {"DeleteRequest": {"Key": self._change_key(department_id, seq)}} for seq in sorted(set(seqs))])

    def _resolve(self, department_id: str, seq: int) -> None:
        """Decide a change whose writer died or stalls (see the module's docstring)."""
        if applied(lambda: self.client.put_item(
                TableName=self.changes_table, ConditionExpression="attribute_not_exists(seq)",
                Item=to_item({"department_id": department_id, "seq": seq, "kind": NOOP, "id": "", "prev": 0,
                              "state": NOOP}))):
            return  # never written: closed; its writer's put will fail and take another seq
        change = self._change(department_id, seq)
        if change is None or change.get("state") != PENDING:
            return
        event_id, kind = change["id"], change["kind"]
        key = to_item({"id": event_id, "department_id": department_id})
        applied(lambda: self.client.update_item(
            TableName=self.events_table, Key=key, UpdateExpression="SET fence = :seq",
            ConditionExpression="attribute_not_exists(fence) OR fence < :seq",
            ExpressionAttributeValues=to_item({":seq": seq})))
        event = self._event_item(event_id, department_id)
        live = event is not None and "event_date" in event
        if kind == PUT:
            happened = live and event is not None and event.get("seq") == seq
        else:
            happened = not live and change.get("prev", 0) > 0
        if happened and kind == DELETE:
            self._tombstone(department_id, seq, event_id)
        self._finish(department_id, seq, DONE if happened else NOOP)

    def _settle(self, department_id: str) -> Frontier:
        """The frontier, after resolving a change that held it for `gap_seconds` or more."""
        for _ in range(UPDATE_ATTEMPTS):
            frontier = self._frontier(department_id)
            seen = self._first_seen
            for key in [key for key in seen if key[0] == department_id and key[1] <= frontier.top]:
                del seen[key]
            if frontier.blocked is None:
                return frontier
            first = seen.setdefault((department_id, frontier.blocked), time.monotonic())
            if time.monotonic() - first < self.gap_seconds:
                return frontier  # answers stop below it for now
            self._resolve(department_id, frontier.blocked)
        return frontier

    def _read_feed(self, department_id: str, cursor: Cursor | None, limit: int | None) -> FeedPage:
        """One answer at a committed position; read again when a purge moved the horizon."""
        for _ in range(UPDATE_ATTEMPTS):
            frontier = self._settle(department_id)
            department, horizon, top = frontier.department, frontier.horizon, frontier.top
            state = FeedState(department.epoch, top, horizon)
            if cursor is None or not cursor.usable(state):
                page = full_page(department_id, state, self._current_events(department_id, top))
            else:
                page = self._changes_since(department_id, state, cursor.since, limit)
            if int(self._department_item(department_id).get("horizon", 0)) == horizon:
                return page
        raise StorageUnavailable()

    def _current_events(self, department_id: str, top: int) -> list[Event]:
        """Every event as of `top`: the puts of the department's partition (one per event, and
        the few changes in flight), less any a later change up to `top` replaced or deleted."""
        latest: dict[str, dict[str, Any]] = {}
        for change in pages(self.client, "query", TableName=self.changes_table, ConsistentRead=True,
                            KeyConditionExpression="department_id = :d AND seq <= :top",
                            ExpressionAttributeValues=to_item({":d": department_id, ":top": top})):
            if change.get("state") == DONE:
                latest[change["id"]] = change
        return [Event.from_dict(change["record"]) for change in latest.values() if change["kind"] == PUT]

    def _changes_since(self, department_id: str, state: FeedState, since: int, limit: int | None) -> FeedPage:
        """What changed after `since`, up to `state.seq`: at most `limit` items of each kind read."""
        window = {"KeyConditionExpression": "department_id = :d AND seq BETWEEN :from AND :top",
                  "TableName": self.changes_table, "ConsistentRead": True}
        cut = state.seq
        found: list[dict[str, Any]] = []
        for partition in (department_id, department_id + TOMBSTONES):
            values = to_item({":d": partition, ":from": since + 1, ":top": state.seq})
            if limit is None:
                items = list(pages(self.client, "query", ExpressionAttributeValues=values, **window))
            else:
                items, more = first_items(self.client, limit, ExpressionAttributeValues=values, **window)
                if more and items:
                    cut = min(cut, items[-1]["seq"])
            found += items
        latest: dict[str, dict[str, Any]] = {}
        for change in sorted(found, key=lambda change: change["seq"]):
            if change["seq"] <= cut and (change["department_id"].endswith(TOMBSTONES) or change.get("state") == DONE):
                latest[change["id"]] = change
        events = [Event.from_dict(c["record"]) for c in latest.values() if c.get("kind") == PUT]
        tombstones = [Tombstone(c["id"], c["seq"]) for c in latest.values() if c.get("kind") != PUT]
        page = changes_page(department_id, FeedState(state.epoch, cut, state.horizon), since, events, tombstones, limit)
        return dataclasses.replace(page, more=page.more or cut < state.seq)

    # -- bulk writes and purging ------------------------------------------------------------
    def _write_as_changes(self, department_id: str, events: list[Event], replaced: dict[str, int]) -> None:
        """Write `events` as the department's next changes, in one block of seqs: the events
        first, then their changes, done (bulk paths: starting a feed, importing). `replaced`:
        the seq each event had, for the changes their puts replace."""
        if not events:
            return
        first = self._take_seq(department_id, len(events)) - len(events) + 1
        events = [dataclasses.replace(e, seq=first + n) for n, e in enumerate(events)]
        batch_write(self.client, self.events_table, [
            {"PutRequest": {"Item": to_item({**e.to_dict(), "fence": e.seq})}} for e in events])
        batch_write(self.client, self.changes_table, [{"PutRequest": {"Item": to_item({
            "department_id": department_id, "seq": e.seq, "kind": PUT, "id": e.id, "prev": replaced.get(e.id, 0),
            "state": DONE, "record": e.to_dict()})}} for e in events])

    def _purge_department(self, department_id: str, cutoff: float) -> int:
        """Drop tombstones deleted before `cutoff`; the horizon rises past them first, so a
        reader that overlaps the deletes sees it move and reads again."""
        gone = [item for item in pages(self.client, "query", TableName=self.changes_table,
                                       KeyConditionExpression="department_id = :d",
                                       ExpressionAttributeValues=to_item({":d": department_id + TOMBSTONES}))
                if item["at"] < cutoff]
        if not gone:
            return 0
        horizon = max(item["seq"] for item in gone)
        applied(lambda: self.client.update_item(
            TableName=self.departments_table, Key=to_item({"id": department_id}), UpdateExpression="SET horizon = :h",
            ConditionExpression="attribute_exists(id) AND (attribute_not_exists(horizon) OR horizon < :h)",
            ExpressionAttributeValues=to_item({":h": horizon})))
        batch_write(self.client, self.changes_table, [{"DeleteRequest": {"Key": self._change_key(
            department_id + TOMBSTONES, item["seq"])}} for item in gone])
        return len(gone)

    def _drop_feed(self, department_id: str) -> None:
        """A deleted department's changes and tombstones."""
        for partition in (department_id, department_id + TOMBSTONES):
            batch_write(self.client, self.changes_table, [
                {"DeleteRequest": {"Key": self._change_key(partition, item["seq"])}}
                for item in pages(self.client, "query", TableName=self.changes_table, ProjectionExpression="seq",
                                  KeyConditionExpression="department_id = :d",
                                  ExpressionAttributeValues=to_item({":d": partition}))])

