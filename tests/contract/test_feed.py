"""The change feed, conditional writes and idempotency keys of `storage/base.py`, on every backend."""
from __future__ import annotations

import asyncio

import pytest

from calsync.storage.errors import (
    DepartmentNotFound,
    DuplicateDepartmentName,
    EventNotFound,
    IdempotencyMismatch,
    VersionConflict,
)
from calsync.storage.feed import Change, Cursor, IdempotencyKey, Kind, Tombstone
from calsync.storage.records import Event
from tests.clock import ManualClock

MEETING = {"event_date": "2024-01-20", "title": "팀 회의", "description": "", "time": "", "url": ""}


def key(name: str = "k", fields: dict | None = None, scope: str = "/api/events/x") -> IdempotencyKey:
    return IdempotencyKey.for_request(scope, name, fields or MEETING, 3600)


async def test_writes_return_their_change(storage):
    created = await storage.create_department("개발팀")
    assert (created.kind, created.seq, created.replayed) == (Kind.DEPARTMENT_CREATED, 0, False)
    department = created.record
    assert (department.seq, len(department.epoch) > 0) == (0, True)
    event_change = await storage.create_event(department.id, MEETING)
    assert (event_change.kind, event_change.seq, event_change.record.seq) == (Kind.EVENT_CREATED, 1, 1)
    assert event_change.department_id == department.id
    updated = await storage.update_event(event_change.record.id, {"title": "둘"})
    assert (updated.kind, updated.seq, updated.record.title, updated.record.version) == (Kind.EVENT_UPDATED, 2, "둘", 2)
    deleted = await storage.delete_event(event_change.record.id)
    assert (deleted.kind, deleted.seq, deleted.record) == (Kind.EVENT_DELETED, 3, updated.record)
    renamed = await storage.update_department(department.id, {"name": "플랫폼팀"})
    assert (renamed.kind, renamed.record.name, renamed.record.seq, renamed.record.epoch) == (
        Kind.DEPARTMENT_UPDATED, "플랫폼팀", 3, department.epoch)
    gone = await storage.delete_department(department.id)
    assert (gone.kind, gone.record.id) == (Kind.DEPARTMENT_DELETED, department.id)


async def test_update_department_keeps_names_unique(storage):
    one = (await storage.create_department("개발팀")).record
    two = (await storage.create_department("인사팀")).record
    with pytest.raises(DuplicateDepartmentName):
        await storage.update_department(two.id, {"name": "개발팀"})
    with pytest.raises(DepartmentNotFound):
        await storage.update_department("nope", {"name": "x"})
    assert (await storage.update_department(one.id, {"description": "설명"})).record.name == "개발팀"
    results = await asyncio.gather(*(storage.update_department(d.id, {"name": "같은팀"}) for d in (one, two)),
                                   return_exceptions=True)
    assert sorted(type(r).__name__ for r in results) == ["Change", "DuplicateDepartmentName"]
    assert sorted(d.name for d in await storage.list_departments()) in (["같은팀", "개발팀"], ["같은팀", "인사팀"])


async def test_seq_is_per_department_and_consecutive(storage):
    one = (await storage.create_department("개발팀")).record
    two = (await storage.create_department("인사팀")).record
    seqs = []
    for i in range(5):
        seqs.append((await storage.create_event(one.id, MEETING)).seq)
        if i % 2:
            await storage.create_event(two.id, MEETING)
    assert seqs == [1, 2, 3, 4, 5]
    assert (await storage.feed_state(one.id)).seq == 5 and (await storage.feed_state(two.id)).seq == 2
    assert (await storage.get_department(one.id)).seq == 5
    with pytest.raises(DepartmentNotFound):
        await storage.feed_state("nope")
    with pytest.raises(DepartmentNotFound):
        await storage.read_feed("nope")


async def test_concurrent_writes_take_distinct_consecutive_seqs(storage):
    department = (await storage.create_department("개발팀")).record
    changes = await asyncio.gather(*(storage.create_event(department.id, MEETING) for _ in range(15)))
    assert sorted(c.seq for c in changes) == list(range(1, 16))


async def test_read_feed_full_and_incremental(storage):
    department = (await storage.create_department("개발팀")).record
    first = (await storage.create_event(department.id, {**MEETING, "event_date": "2024-02-01"})).record
    second = (await storage.create_event(department.id, MEETING)).record
    full = await storage.read_feed(department.id)
    assert (full.reset, full.seq, full.epoch, list(full.deleted), full.more) == (True, 2, department.epoch, [], False)
    assert list(full.events) == [second, first]  # REST order
    assert [e.seq for e in full.events] == [2, 1]
    changed = (await storage.update_event(first.id, {"title": "바뀜"})).record
    await storage.delete_event(second.id)
    page = await storage.read_feed(department.id, Cursor(2, department.epoch))
    assert (page.reset, page.seq, list(page.events), list(page.deleted)) == (False, 4, [changed], [Tombstone(second.id, 4)])
    assert [e.seq for e in page.events] == [3]
    everything = await storage.read_feed(department.id, Cursor(0, department.epoch))
    assert (everything.reset, [e.id for e in everything.events], [t.id for t in everything.deleted]) == (
        False, [first.id], [second.id])
    for cursor in (Cursor(0, "other"), Cursor(5, department.epoch), Cursor(1, None)):
        assert (await storage.read_feed(department.id, cursor)).reset is True, cursor


async def test_read_feed_pages(storage):
    department = (await storage.create_department("개발팀")).record
    for _ in range(5):
        await storage.create_event(department.id, MEETING)
    page = await storage.read_feed(department.id, Cursor(0, department.epoch), limit=2)
    assert ([e.seq for e in page.events], page.seq, page.more) == ([1, 2], 2, True)
    page = await storage.read_feed(department.id, Cursor(4, department.epoch), limit=2)
    assert ([e.seq for e in page.events], page.seq, page.more) == ([5], 5, False)


async def test_if_match_is_checked_in_the_write(storage):
    department = (await storage.create_department("개발팀")).record
    event = (await storage.create_event(department.id, MEETING)).record
    with pytest.raises(VersionConflict) as conflict:
        await storage.update_event(event.id, {"title": "x"}, if_versions={2, 3})
    assert conflict.value.current == event
    with pytest.raises(VersionConflict):
        await storage.update_event(event.id, {"title": "x"}, if_versions=frozenset())
    assert (await storage.feed_state(department.id)).seq == 1  # a refused write takes no seq
    assert (await storage.update_event(event.id, {"title": "x"}, if_versions={1})).record.version == 2
    with pytest.raises(VersionConflict):
        await storage.delete_event(event.id, if_versions={1})
    assert (await storage.get_event(event.id)).title == "x"
    with pytest.raises(EventNotFound):
        await storage.update_event("nope", {"title": "x"}, if_versions={1})
    assert (await storage.delete_event(event.id, if_versions={2})).seq == 3


async def test_twenty_concurrent_conditional_updates_one_wins(storage):
    department = (await storage.create_department("개발팀")).record
    event = (await storage.create_event(department.id, MEETING)).record
    results = await asyncio.gather(*(storage.update_event(event.id, {"title": f"{i}"}, if_versions={1})
                                     for i in range(20)), return_exceptions=True)
    winners = [r for r in results if isinstance(r, Change)]
    assert len(winners) == 1 and sum(isinstance(r, VersionConflict) for r in results) == 19
    assert (await storage.get_event(event.id)).version == 2
    assert (await storage.feed_state(department.id)).seq == 2


async def test_idempotent_creates(storage):
    department_key = IdempotencyKey.for_request("/api/departments", "d", {"name": "개발팀"}, 3600)
    first = await storage.create_department("개발팀", idempotency=department_key)
    again = await storage.create_department("개발팀", idempotency=department_key)
    assert (again.replayed, again.record, again.record.epoch) == (True, first.record, first.record.epoch)
    with pytest.raises(IdempotencyMismatch):
        await storage.create_department("인사팀", idempotency=IdempotencyKey.for_request(
            "/api/departments", "d", {"name": "인사팀"}, 3600))
    department = first.record
    made = await storage.create_event(department.id, MEETING, key())
    repeat = await storage.create_event(department.id, MEETING, key())
    assert (repeat.replayed, repeat.record, repeat.record.seq, repeat.kind) == (True, made.record, 1, Kind.EVENT_CREATED)
    with pytest.raises(IdempotencyMismatch):
        await storage.create_event(department.id, {**MEETING, "title": "다른"}, key(fields={**MEETING, "title": "다른"}))
    assert len(await storage.list_events(department.id)) == 1
    assert (await storage.feed_state(department.id)).seq == 1
    # a failed create keeps no key
    with pytest.raises(DepartmentNotFound):
        await storage.create_event("nope", MEETING, key("retry"))
    assert not (await storage.create_event(department.id, MEETING, key("retry"))).replayed


async def test_concurrent_idempotent_creates_make_one_record(storage):
    department = (await storage.create_department("개발팀")).record
    results = await asyncio.gather(*(storage.create_event(department.id, MEETING, key("same")) for _ in range(10)),
                                   return_exceptions=True)
    assert all(isinstance(r, Change) for r in results), results
    assert len({r.record.id for r in results}) == 1 and sum(not r.replayed for r in results) == 1
    assert len(await storage.list_events(department.id)) == 1


async def test_idempotency_keys_expire(storage):
    department = (await storage.create_department("개발팀")).record
    short = IdempotencyKey.for_request("/p", "k", MEETING, 0.2)
    first = await storage.create_event(department.id, MEETING, short)
    storage.clock = ManualClock(storage.clock() + 1.1)  # past its time (DynamoDB keeps whole seconds)
    assert await storage.purge(3600) >= 0
    again = await storage.create_event(department.id, MEETING, short)
    assert not again.replayed and again.record.id != first.record.id


async def test_purge_raises_the_horizon(storage):
    department = (await storage.create_department("개발팀")).record
    gone = (await storage.create_event(department.id, MEETING)).record
    await storage.delete_event(gone.id)
    kept = (await storage.create_event(department.id, MEETING)).record
    assert await storage.purge(3600) == 0
    assert (await storage.feed_state(department.id)).horizon == 0
    storage.clock = ManualClock(storage.clock() + 1.1)
    assert await storage.purge(0.5) == 1
    state = await storage.feed_state(department.id)
    assert (state.horizon, state.seq) == (2, 3)
    assert (await storage.read_feed(department.id, Cursor(1, department.epoch))).reset is True
    page = await storage.read_feed(department.id, Cursor(2, department.epoch))
    assert (page.reset, [e.id for e in page.events], list(page.deleted)) == (False, [kept.id], [])
    full = await storage.read_feed(department.id)
    assert [e.id for e in full.events] == [kept.id]


async def test_import_starts_a_new_epoch(storage):
    department = (await storage.create_department("개발팀")).record
    event = (await storage.create_event(department.id, MEETING)).record
    moved = Event(**{**event.to_dict(), "title": "가져온 것", "seq": 0})
    assert await storage.import_events([moved]) == ["updated"]
    after = await storage.feed_state(department.id)
    assert after.epoch != department.epoch and after.seq == 2
    page = await storage.read_feed(department.id, Cursor(1, department.epoch))
    assert page.reset is True and [e.title for e in page.events] == ["가져온 것"]


@pytest.mark.parametrize("backend", ["sqlite", "json", "dynamodb", "dynamodb-http"])
def test_feed_and_keys_survive_a_restart(storage_factory, backend, io_loop):
    first = storage_factory(backend)

    async def before():
        department = (await first.create_department("개발팀")).record
        made = await first.create_event(department.id, MEETING, key())
        await first.delete_event((await first.create_event(department.id, MEETING)).record.id)
        await first.close()
        return department, made

    department, made = io_loop.run_sync(before)
    second = storage_factory(backend)  # a restart; on DynamoDB, another process on the same tables

    async def after():
        state = await second.feed_state(department.id)
        assert (state.epoch, state.seq) == (department.epoch, 3)
        replay = await second.create_event(department.id, MEETING, key())
        assert replay.replayed and replay.record == made.record
        page = await second.read_feed(department.id, Cursor(1, department.epoch))
        assert (page.seq, [t.seq for t in page.deleted]) == (3, [3])
        assert (await second.create_event(department.id, MEETING)).seq == 4

    io_loop.run_sync(after)
