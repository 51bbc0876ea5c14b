"""The DynamoDB feed through real faults (contract 12.2): a proxy throttles, delays, or
applies a request and then loses its answer, at every step of a create, an update and a
delete. Afterwards, for every case:

- the store agrees with itself: a fresh full answer holds exactly the events that reads by
  id find, as they find them;
- a client that followed the feed with cursors from before the fault ends equal to it;
- every (seq -> entry) ever served kept its meaning;
- the write's answer was true: acknowledged means in the feed, 503 means whole or nothing.
"""
from __future__ import annotations

import asyncio
import dataclasses

import pytest

from calsync.storage.errors import EventNotFound, StorageUnavailable
from tests.backends import dynamo_options, make_dynamo
from tests.dynamoproxy import DynamoProxy, Fault
from tests.feedcopy import FeedCopy

GAP = 0.2


@pytest.fixture
def proxy(moto_server):
    proxy = DynamoProxy(moto_server)
    yield proxy
    proxy.close()


async def settled(reader, department_id: str):
    """The full answer once nothing is in flight: a dead writer's seq is resolved after GAP."""
    for _ in range(20):
        page = await reader.read_feed(department_id)
        if page.seq == int(reader._department_item(department_id)["seq"]):
            return page
        await asyncio.sleep(GAP)
    raise AssertionError("the feed never settled")


OPERATIONS = ["create", "update", "delete"]
FAULTS = ["throttle", "drop", "delay"]


async def run(operation: str, faulty, department_id: str, event_id: str):
    if operation == "create":
        return await faulty.create_event(department_id, {"event_date": "2024-02-01", "title": "새 일정"})
    if operation == "update":
        return await faulty.update_event(event_id, {"title": "고침"}, if_versions={1})
    return await faulty.delete_event(event_id, if_versions={1})


@pytest.fixture
def pair(proxy, moto_server, io_loop):
    """A reader straight to DynamoDB and a writer through the proxy, on one set of tables."""
    options = dynamo_options(moto_server, max_attempts=2, timeout_seconds=2)
    reader = make_dynamo(options)
    io_loop.run_sync(reader.create_tables)
    faulty = make_dynamo(dataclasses.replace(options, endpoint_url=proxy.url))
    for storage in (reader, faulty):
        storage.gap_seconds = GAP
        io_loop.run_sync(storage.open)
    yield reader, faulty
    proxy.arm(None)
    io_loop.run_sync(faulty.close)
    io_loop.run_sync(reader.close)


@pytest.mark.parametrize("operation", OPERATIONS)
async def test_every_fault_at_every_step_leaves_one_true_calendar(operation, proxy, pair):
    reader, faulty = pair
    department = (await reader.create_department("요청 세기")).record
    event = (await reader.create_event(department.id, {"event_date": "2024-01-20", "title": "회의"})).record
    await faulty.read_feed(department.id)  # its feed is known started, as in a running server
    proxy.arm(None)
    await run(operation, faulty, department.id, event.id)
    steps = len(proxy.log)
    assert steps >= 5, proxy.log
    for step in range(steps):
        for action in FAULTS:
            await one_case(operation, step, action, proxy, reader, faulty)


async def one_case(operation: str, step: int, action: str, proxy, reader, faulty) -> None:
    department = (await reader.create_department(f"{operation}-{step}-{action}")).record
    event = (await reader.create_event(department.id, {"event_date": "2024-01-20", "title": "회의"})).record
    follower = FeedCopy()
    await follower.follow(reader, department.id)
    await faulty.read_feed(department.id)
    proxy.arm(Fault(step, action))
    try:
        change = await run(operation, faulty, department.id, event.id)
    except StorageUnavailable:
        change = None
    finally:
        proxy.arm(None)
    case = f"{operation} with {action} at request {step}"
    full = await settled(reader, department.id)
    # the store agrees with itself
    stored = {}
    for event_id in {event.id, *(e.id for e in full.events), *([change.record.id] if change else [])}:
        try:
            stored[event_id] = (await reader.get_event(event_id)).to_dict()
        except EventNotFound:
            pass
    assert {e.id: e.to_dict() for e in full.events} == stored, case
    # a follower with cursors ends equal to it
    await follower.follow(reader, department.id)
    assert follower.events == stored, case
    # the answer was true
    if change is not None and operation != "delete":
        assert stored.get(change.record.id) == change.record.to_dict(), case
    if change is not None and operation == "delete":
        assert event.id not in stored, case
    if change is None and operation == "update" and event.id in stored:
        assert stored[event.id]["version"] in (1, 2), case  # whole or nothing
    # a reader that comes fresh, through the other process, agrees too
    again = FeedCopy()
    await again.follow(faulty, department.id)
    assert again.events == stored, case
