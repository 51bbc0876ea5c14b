"""The DynamoDB feed under random interleavings of two processes, crashes and followers
(a hypothesis state machine; contract 12.2).

Two storages share one set of tables, as two processes would. Writes (create, update with
and without If-Match, delete) go through either; any write may crash at any request —
a botocore hook raises before the request is sent (the process died before it) or after its
answer came back (it died right after DynamoDB applied it) — and the rest of its protocol
never runs. Followers read the feed with cursors through either storage at any moment, and
time passes beyond `gap_seconds` at random. Invariants, after every step: every (seq ->
entry) ever served keeps its meaning, and answers only move forward. At the end, once
nothing is in flight: every follower's copy equals a fresh full answer, which equals what
reads by id find, and every acknowledged write is in it unless a later write replaced it.
"""
from __future__ import annotations

import asyncio
import time

import moto
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from calsync.storage.errors import CalsyncError, EventNotFound, StorageUnavailable
from tests.backends import dynamo_options, make_dynamo
from tests.feedcopy import FeedCopy

GAP = 0.05


class Crash(Exception):
    """The process died here: nothing after this request runs."""


class CrashAt:
    """Raises `Crash` at the n-th DynamoDB request of the storage's client, before it is sent
    or after it was applied."""

    def __init__(self, storage) -> None:
        self.left: int | None = None
        self.after = False
        storage.client.meta.events.register("before-send.dynamodb.*", self._before)
        storage.client.meta.events.register("after-call.dynamodb.*", self._after)

    def arm(self, at: int | None, after: bool) -> None:
        self.left, self.after = at, after

    def _tick(self) -> bool:
        if self.left is None:
            return False
        self.left -= 1
        if self.left < 0:
            self.left = None
            return True
        return False

    def _before(self, **_) -> None:
        if not self.after and self._tick():
            raise Crash()

    def _after(self, **_) -> None:
        if self.after and self._tick():
            raise Crash()


class FeedMachine(RuleBasedStateMachine):
    @initialize()
    def start(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.mock = moto.mock_aws()
        self.mock.start()
        options = dynamo_options()
        self.storages = [make_dynamo(options), make_dynamo(options)]
        self.run(self.storages[0].create_tables())
        for storage in self.storages:
            storage.gap_seconds = GAP
            self.run(storage.open())
        self.crashes = [CrashAt(storage) for storage in self.storages]
        self.department = self.run(self.storages[0].create_department("개발팀")).record
        self.ids: list[str] = []
        self.followers = [FeedCopy(), FeedCopy()]
        self.acknowledged: dict[str, dict | None] = {}  # event id -> as the last acknowledged write left it

    def run(self, coroutine):
        return self.loop.run_until_complete(coroutine)

    def write(self, which: int, crash: tuple[int, bool] | None, coroutine_factory):
        self.crashes[which].arm(*(crash or (None, False)))
        try:
            return self.run(coroutine_factory(self.storages[which]))
        except (Crash, StorageUnavailable):
            return None  # died, or answered 503: either way the client was not told it happened
        except CalsyncError:
            return None  # 404 / 412: the answer says nothing changed
        finally:
            self.crashes[which].arm(None, False)

    crashes_st = st.one_of(st.none(), st.tuples(st.integers(0, 7), st.booleans()))

    @rule(which=st.integers(0, 1), crash=crashes_st, title=st.sampled_from(["회의", "점검", "교육"]))
    def create(self, which, crash, title) -> None:
        change = self.write(which, crash, lambda s: s.create_event(
            self.department.id, {"event_date": "2026-12-02", "title": title}))
        if change is not None:
            self.ids.append(change.record.id)
            self.acknowledged[change.record.id] = change.record.to_dict()

    @precondition(lambda self: self.ids)
    @rule(which=st.integers(0, 1), crash=crashes_st, pick=st.integers(0, 99), guarded=st.booleans())
    def update(self, which, crash, pick, guarded) -> None:
        event_id = self.ids[pick % len(self.ids)]
        known = self.acknowledged.get(event_id)
        versions = {known["version"]} if guarded and known else None
        change = self.write(which, crash, lambda s: s.update_event(event_id, {"description": f"{pick}"}, versions))
        if change is not None:
            self.acknowledged[event_id] = change.record.to_dict()

    @precondition(lambda self: self.ids)
    @rule(which=st.integers(0, 1), crash=crashes_st, pick=st.integers(0, 99))
    def delete(self, which, crash, pick) -> None:
        event_id = self.ids[pick % len(self.ids)]
        if self.write(which, crash, lambda s: s.delete_event(event_id)) is not None:
            self.acknowledged[event_id] = None

    @rule(follower=st.integers(0, 1), via=st.integers(0, 1), limit=st.sampled_from([None, 2]))
    def follow(self, follower, via, limit) -> None:
        mine = self.followers[follower]
        self.followers[follower].apply(self.run(self.storages[via].read_feed(self.department.id, mine.cursor, limit)))

    @rule()
    def time_passes(self) -> None:
        time.sleep(GAP * 1.5)

    @invariant()
    def served_entries_keep_their_meaning(self) -> None:
        if not hasattr(self, "followers"):
            return
        seen: dict[int, tuple] = {}
        for follower in self.followers:
            for seq, entry in follower.served.items():
                assert seen.setdefault(seq, entry) == entry, f"seq {seq} served as {seen[seq]} and as {entry}"

    def teardown(self) -> None:
        if not hasattr(self, "storages"):
            return
        try:
            reader = self.storages[0]
            for _ in range(40):  # nothing in flight any more: every dead writer's seq resolved
                full = self.run(reader.read_feed(self.department.id))
                if full.seq == int(reader._department_item(self.department.id)["seq"]):
                    break
                time.sleep(GAP * 1.5)
            else:
                raise AssertionError("the feed never settled")
            stored = {}
            for event_id in self.ids + [e.id for e in full.events]:
                try:
                    stored[event_id] = self.run(reader.get_event(event_id)).to_dict()
                except EventNotFound:
                    pass
            assert {e.id: e.to_dict() for e in full.events} == stored
            for follower in self.followers:
                self.run(follower.follow(self.storages[1], self.department.id))
                assert follower.events == stored
            for event_id, last in self.acknowledged.items():
                if last is None:
                    assert event_id not in stored
                elif event_id in stored:
                    assert stored[event_id]["version"] >= last["version"]
        finally:
            for storage in self.storages:
                self.run(storage.close())
            self.mock.stop()
            self.loop.close()


TestFeedInterleavings = FeedMachine.TestCase
TestFeedInterleavings.settings = settings(max_examples=15, stateful_step_count=20, deadline=None,
                                          suppress_health_check=list(HealthCheck))
pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
