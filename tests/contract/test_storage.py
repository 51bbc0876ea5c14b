"""The storage contract (`storage/base.py` docstrings), run against every backend."""
from __future__ import annotations

import asyncio

import pytest

from calsync.storage.errors import DepartmentNotFound, DuplicateDepartmentName, EventNotFound
from calsync.storage.feed import Change
from calsync.storage.records import Department, Event

MEETING = {"event_date": "2024-01-20", "title": "팀 회의", "description": "주간 팀 회의", "time": "오후 2:00",
           "url": "https://example.com"}


async def test_create_and_get_department(storage):
    created = (await storage.create_department("개발팀", "소프트웨어 개발")).record
    assert created.name == "개발팀" and created.description == "소프트웨어 개발"
    assert created.created_at == created.updated_at and created.created_at.endswith("Z")
    assert await storage.get_department(created.id) == created
    assert await storage.list_departments() == [created]


async def test_departments_sorted_by_name(storage):
    for name in ["마케팅팀", "개발팀", "Zeta", "alpha"]:
        (await storage.create_department(name)).record
    assert [d.name for d in await storage.list_departments()] == ["Zeta", "alpha", "개발팀", "마케팅팀"]


async def test_duplicate_name_refused(storage):
    (await storage.create_department("개발팀")).record
    with pytest.raises(DuplicateDepartmentName):
        (await storage.create_department("개발팀")).record
    assert len(await storage.list_departments()) == 1


async def test_twenty_concurrent_creates_of_one_name_one_wins(storage):
    results = await asyncio.gather(*(storage.create_department("동시팀") for _ in range(20)), return_exceptions=True)
    winners = [r.record for r in results if isinstance(r, Change)]
    assert len(winners) == 1
    assert all(isinstance(r, DuplicateDepartmentName) for r in results if not isinstance(r, Change))
    assert [d.id for d in await storage.list_departments()] == [winners[0].id]


async def test_missing_department(storage):
    for call in (storage.get_department("nope"), storage.delete_department("nope"), storage.list_events("nope"),
                 storage.create_event("nope", MEETING)):
        with pytest.raises(DepartmentNotFound):
            await call


async def test_event_crud(storage):
    department = (await storage.create_department("개발팀")).record
    event = (await storage.create_event(department.id, MEETING)).record
    assert (event.department_id, event.title, event.time, event.version) == (department.id, "팀 회의", "오후 2:00", 1)
    assert event.created_at == event.last_modified
    assert await storage.get_event(event.id) == event

    await asyncio.sleep(0.002)
    updated = (await storage.update_event(event.id, {"title": "수정된 제목", "time": "오후 3:00"})).record
    assert (updated.title, updated.time, updated.description, updated.version) == ("수정된 제목", "오후 3:00", "주간 팀 회의", 2)
    assert updated.last_modified > event.last_modified and updated.created_at == event.created_at
    assert await storage.get_event(event.id) == updated

    deleted = (await storage.delete_event(event.id)).record
    assert deleted == updated
    with pytest.raises(EventNotFound):
        await storage.get_event(event.id)
    assert await storage.list_events(department.id) == []


async def test_missing_event(storage):
    for call in (storage.get_event("nope"), storage.update_event("nope", {"title": "x"}), storage.delete_event("nope")):
        with pytest.raises(EventNotFound):
            await call


async def test_concurrent_updates_lose_nothing(storage):
    department = (await storage.create_department("개발팀")).record
    event = (await storage.create_event(department.id, MEETING)).record
    await asyncio.gather(*(storage.update_event(event.id, {"description": str(i)}) for i in range(10)))
    assert (await storage.get_event(event.id)).version == 11


async def test_events_sorted_by_date_time_created(storage):
    department = (await storage.create_department("개발팀")).record
    specs = [("2024-01-21", "09:00"), ("2024-01-20", "오후 2:00"), ("2024-01-20", "14:00"), ("2024-01-20", ""),
             ("2024-01-20", "14:00")]
    for date, time in specs:
        (await storage.create_event(department.id, {**MEETING, "event_date": date, "time": time})).record
    events = await storage.list_events(department.id)
    keys = [(e.event_date, e.time) for e in events]
    assert keys == [("2024-01-20", ""), ("2024-01-20", "14:00"), ("2024-01-20", "14:00"), ("2024-01-20", "오후 2:00"),
                    ("2024-01-21", "09:00")]
    same = [e for e in events if e.time == "14:00"]
    assert same[0].created_at <= same[1].created_at


async def test_date_range_inclusive(storage):
    department = (await storage.create_department("개발팀")).record
    for day in range(1, 32):
        (await storage.create_event(department.id, {**MEETING, "event_date": f"2024-01-{day:02d}"})).record
    dates = [e.event_date for e in await storage.list_events(department.id, "2024-01-10", "2024-01-12")]
    assert dates == ["2024-01-10", "2024-01-11", "2024-01-12"]
    assert len(await storage.list_events(department.id, date_from="2024-01-30")) == 2
    assert len(await storage.list_events(department.id, date_to="2024-01-02")) == 2


async def test_events_stay_in_their_department(storage):
    one = (await storage.create_department("개발팀")).record
    two = (await storage.create_department("마케팅팀")).record
    (await storage.create_event(one.id, MEETING)).record
    (await storage.create_event(two.id, {**MEETING, "title": "캠페인"})).record
    assert [e.title for e in await storage.list_events(one.id)] == ["팀 회의"]
    assert [e.title for e in await storage.list_events(two.id)] == ["캠페인"]


async def test_delete_department_cascades(storage):
    one = (await storage.create_department("개발팀")).record
    two = (await storage.create_department("마케팅팀")).record
    gone = [(await storage.create_event(one.id, MEETING)).record for _ in range(3)]
    kept = (await storage.create_event(two.id, MEETING)).record
    assert ((await storage.delete_department(one.id)).record).id == one.id
    with pytest.raises(DepartmentNotFound):
        await storage.get_department(one.id)
    for event in gone:
        with pytest.raises(EventNotFound):
            await storage.get_event(event.id)
    assert await storage.get_event(kept.id) == kept
    assert [d.name for d in await storage.list_departments()] == ["마케팅팀"]
    # the name is free again
    assert ((await storage.create_department("개발팀")).record).name == "개발팀"


async def test_import_keeps_ids_and_reports_outcomes(storage):
    department = Department("11111111-1111-5111-8111-111111111111", "개발팀", "", "2024-01-01T00:00:00.000Z",
                            "2024-01-01T00:00:00.000Z")
    event = Event("22222222-2222-5222-8222-222222222222", department.id, "2024-01-20", "팀 회의", "", "", "",
                  "2024-01-02T00:00:00.000Z", "2024-01-03T00:00:00.000Z", 4)
    assert await storage.import_departments([department]) == ["created"]
    assert await storage.import_events([event]) == ["created"]
    assert await storage.import_departments([department]) == ["unchanged"]
    assert await storage.import_events([event]) == ["unchanged"]
    changed = Event(**{**event.to_dict(), "title": "바뀐 회의"})
    assert await storage.import_events([changed]) == ["updated"]
    assert await storage.get_department(department.id) == department
    assert await storage.list_events(department.id) == [changed]


async def test_import_refuses_a_name_held_by_another_id(storage):
    (await storage.create_department("개발팀")).record
    twin = Department("33333333-3333-5333-8333-333333333333", "개발팀", "", "2024-01-01T00:00:00.000Z",
                      "2024-01-01T00:00:00.000Z")
    with pytest.raises(DuplicateDepartmentName):
        await storage.import_departments([twin])


async def test_import_event_needs_its_department(storage):
    orphan = Event("44444444-4444-5444-8444-444444444444", "nope", "2024-01-20", "팀 회의", "", "", "",
                   "2024-01-02T00:00:00.000Z", "2024-01-03T00:00:00.000Z", 1)
    with pytest.raises(DepartmentNotFound):
        await storage.import_events([orphan])


async def test_ping(storage):
    await storage.ping()
