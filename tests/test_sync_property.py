"""No change is ever lost: random interleavings of writes, disconnects and rejoins (hypothesis).

Two departments, two clients that follow both. Writes go through REST; clients drop their
connection at random points (reading what had arrived, or not) and rejoin from their
cursor. Each client applies pushes as the contract's README recipe does, and checks that
they come exactly once and in order: every push of a department is the client's seq + 1.
At the end every client's copy equals the store exactly.
"""
from __future__ import annotations

import asyncio
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from calsync.storage.base import Storage
from tests.client import SyncClient, api

TITLES = st.text(alphabet="가나다라 abc🙂\u200f", min_size=1, max_size=8).filter(str.strip)
CREATE = st.tuples(st.just("create"), st.integers(0, 1), TITLES)
STEPS = st.lists(st.one_of(
    CREATE, CREATE,
    st.tuples(st.just("burst"), st.integers(0, 1), st.integers(2, 6)),
    st.tuples(st.just("update"), st.integers(0, 1), st.integers(0, 99), TITLES),
    st.tuples(st.just("delete"), st.integers(0, 1), st.integers(0, 99)),
    st.tuples(st.just("drop"), st.integers(0, 1), st.booleans()),
    st.tuples(st.just("rejoin"), st.integers(0, 1)),
), min_size=4, max_size=40)


class Follower:
    """A client's copy of some departments, kept by the contract's rules."""

    def __init__(self, ws_url: str, departments: list[str]) -> None:
        self.ws_url = ws_url
        self.departments = departments
        self.copies: dict[str, dict[str, dict]] = {d: {} for d in departments}
        self.cursors: dict[str, tuple[str, int]] = {}
        self.client: SyncClient | None = None
        self.joining: asyncio.Task | None = None  # a rejoin running beside the writes that follow it

    async def settle(self) -> None:
        if self.joining is not None:
            await self.joining
            self.joining = None

    async def connect(self) -> None:
        client = await SyncClient.connect(self.ws_url)
        self.client = client
        for department in self.departments:
            data: dict[str, Any] = {"department_id": department}
            if department in self.cursors:
                data["epoch"], data["since"] = self.cursors[department]
            else:
                data["since"], data["epoch"] = 0, "none yet"  # a reset: the full list
            await self.client.send("join_department", data, "join")
            while True:  # pushes of the department joined before can come first
                frame = await self.client.receive()
                if frame.get("id") == "join":
                    break
                self.apply(frame)
            assert frame["event"] == "joined_department", frame
            self.catch_up(department, frame["data"])

    def catch_up(self, department: str, answer: dict) -> None:
        copy = self.copies[department]
        if answer["reset"]:
            copy.clear()
        for event in answer["events"]:
            copy[event["id"]] = event
        for tombstone in answer["deleted"]:
            copy.pop(tombstone["id"], None)
        assert answer["more"] is False  # a join's catch-up is never paged
        self.cursors[department] = (answer["epoch"], answer["seq"])

    def apply(self, push: dict) -> None:
        data = push["data"]
        department = data["department_id"]
        epoch, seq = self.cursors[department]
        assert data["seq"] == seq + 1, f"{push['event']} seq {data['seq']} after {seq}: a gap or a repeat"
        if push["event"] == "event_deleted":
            self.copies[department].pop(data["id"], None)
        else:
            self.copies[department][data["id"]] = data
        self.cursors[department] = (epoch, data["seq"])

    async def drain(self) -> None:
        """Read everything sent so far: pushes up to the answer of a ping sent now."""
        await self.client.send("ping", {}, "drain")
        while True:
            frame = await self.client.receive()
            if frame["event"] == "pong":
                return
            self.apply(frame)

    async def drop(self, read_first: bool) -> None:
        if read_first:
            await self.drain()
        self.client.close()
        self.client = None


async def run_scenario(steps: list[tuple], http_server_client: Any, ws_url: str, storage: Storage, n: list[int]) -> None:
    n[0] += 1
    departments = []
    for name in ("가", "나"):
        _, body = await api(http_server_client, "POST", "/api/departments", {"name": f"{name}-{n[0]}"})
        departments.append(body["department"]["id"])
    followers = [Follower(ws_url, departments) for _ in range(2)]
    for follower in followers:
        await follower.connect()
    alive: dict[str, list[str]] = {d: [] for d in departments}
    try:
        for step in steps:
            kind, which = step[0], step[1]
            department = departments[which]
            if kind in ("create", "burst"):
                titles = [step[2]] if kind == "create" else [f"burst {i}" for i in range(step[2])]
                answers = await asyncio.gather(*(api(http_server_client, "POST", f"/api/events/{department}",
                                                     {"event_date": "2024-01-20", "title": title}) for title in titles))
                assert all(status == 201 for status, _ in answers), answers
                alive[department] += [body["event"]["id"] for _, body in answers]
            elif kind in ("update", "delete") and alive[department]:
                event_id = alive[department][step[2] % len(alive[department])]
                if kind == "update":
                    status, _ = await api(http_server_client, "PUT", f"/api/events/{event_id}", {"title": step[3]})
                else:
                    status, _ = await api(http_server_client, "DELETE", f"/api/events/{event_id}")
                    alive[department].remove(event_id)
                assert status == 200
            elif kind == "drop" and followers[which].client is not None:
                await followers[which].settle()
                await followers[which].drop(step[2])
            elif kind == "rejoin" and followers[which].client is None:
                await followers[which].settle()
                followers[which].joining = asyncio.ensure_future(followers[which].connect())
        for follower in followers:
            await follower.settle()
            if follower.client is None:
                await follower.connect()
            await follower.drain()
        for department in departments:
            stored = {e.id: e.to_dict() for e in await storage.list_events(department)}
            state = await storage.feed_state(department)
            for follower in followers:
                assert follower.copies[department] == stored
                assert follower.cursors[department] == (state.epoch, state.seq)
    finally:
        for follower in followers:
            if follower.joining is not None:
                follower.joining.cancel()
            if follower.client is not None:
                follower.client.close()


@pytest.mark.usefixtures("http_server")
def test_every_client_ends_with_exactly_the_store(http_server_client, ws_url, storage, backend, io_loop):
    examples = 15 if backend.startswith("dynamodb") else 50
    counter = [0]

    @settings(max_examples=examples, deadline=None, database=None,
              suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
    @given(steps=STEPS)
    def scenario(steps: list[tuple]) -> None:
        io_loop.run_sync(lambda: run_scenario(steps, http_server_client, ws_url, storage, counter), timeout=120)

    scenario()
    assert counter[0] >= examples
    assert len(io_loop.run_sync(storage.list_departments)) == 2 * counter[0]
