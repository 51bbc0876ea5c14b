"""Storage faults (contract 9.4): a locked database, a full disk, a JSON write that fails.

Each fault is real or as near as a test can make it: another connection holding SQLite's
write lock, SQLite's own "database or disk is full" (its page limit lowered to what the
file holds), and a JSON write that leaves half a temp file and raises ENOSPC as a full
disk does. DynamoDB throttling and an endpoint that goes away are in `test_dynamodb.py`.

Through each one: writes answer 503 `storage_unavailable`, `/ready` turns 503, `/health`
stays 200, WebSockets stay open and hear nothing, nothing is half-written (the data and the
feed are as before, also after a restart), and once storage is back everything works again
without a restart.
"""
from __future__ import annotations

import asyncio
import errno
import json
import os
import sqlite3
from pathlib import Path

import pytest

from calsync.storage import jsonfile
from calsync.storage.base import Storage
from calsync.storage.jsonfile import JsonOptions, JsonStorage
from calsync.storage.sqlite import SqliteOptions, SqliteStorage
from tests.client import api

BIG = "긴설명" * 1666  # 15 KB: needs new pages, and a full SQLite file has no room for them


class HeldLock:
    """Another process's writer sitting on SQLite's write lock."""

    small_writes_fail = True

    def __init__(self, storage: SqliteStorage, monkeypatch: pytest.MonkeyPatch) -> None:
        self.path = storage.options.path
        self.db: sqlite3.Connection | None = None

    async def start(self) -> None:
        self.db = sqlite3.connect(self.path, isolation_level=None)
        self.db.execute("BEGIN IMMEDIATE")

    async def end(self) -> None:
        self.db.execute("ROLLBACK")
        self.db.close()


class FullDisk:
    """SQLite's page limit set to what the file holds: growing it fails with SQLITE_FULL, the
    error a full disk gives. A small write may still fit a page's free room, and a delete
    frees room, so those may succeed, as on a full disk."""

    small_writes_fail = False

    def __init__(self, storage: SqliteStorage, monkeypatch: pytest.MonkeyPatch) -> None:
        self.storage = storage

    def _limit(self, pages: int | None) -> None:
        db = self.storage._db
        db.execute(f"PRAGMA max_page_count = {pages or 1073741823}")

    async def start(self) -> None:
        await self.storage.run(lambda: self._limit(self.storage._db.execute("PRAGMA page_count").fetchone()[0]))

    async def end(self) -> None:
        await self.storage.run(lambda: self._limit(None))


class FailingWrites:
    """Every JSON write stops half-way with ENOSPC: a department file's temp file, or a
    journal line (half of it lands at the journal's end, as on a full disk)."""

    small_writes_fail = True

    def __init__(self, storage: JsonStorage, monkeypatch: pytest.MonkeyPatch) -> None:
        self.monkeypatch = monkeypatch

    async def start(self) -> None:
        def fail(path: Path, document: object) -> None:
            tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
            tmp.write_bytes(json.dumps(document).encode()[:100])
            raise OSError(errno.ENOSPC, "No space left on device")

        def fail_append(journal: jsonfile.Journal, entry: dict) -> None:
            with open(journal.path, "ab") as f:
                f.write(json.dumps(entry).encode()[:40])
            raise OSError(errno.ENOSPC, "No space left on device")

        self.monkeypatch.setattr(jsonfile, "write_atomically", fail)
        self.monkeypatch.setattr(jsonfile.Journal, "append", fail_append)

    async def end(self) -> None:
        self.monkeypatch.undo()


FAULTS = {"sqlite-locked": HeldLock, "sqlite-full": FullDisk, "json-failing-writes": FailingWrites}


@pytest.fixture(params=list(FAULTS))
def fault_name(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def backend(fault_name: str) -> str:
    return fault_name.split("-")[0]


def open_storage(backend: str, tmp_path: Path) -> Storage:
    if backend == "sqlite":
        return SqliteStorage(SqliteOptions(path=tmp_path / "calsync.db", busy_timeout=0.3))
    return JsonStorage(JsonOptions(path=tmp_path / "json"))


@pytest.fixture
def storage(backend: str, tmp_path: Path, io_loop):
    store = open_storage(backend, tmp_path)
    io_loop.run_sync(store.open)
    yield store
    io_loop.run_sync(store.close)


async def test_a_storage_fault_answers_503_changes_nothing_and_passes(
        fault_name, storage, monkeypatch, http_server_client, connect, tmp_path, backend):
    client = http_server_client
    _, body = await api(client, "POST", "/api/departments", {"name": "개발팀"})
    department_id = body["department"]["id"]
    _, body = await api(client, "POST", f"/api/events/{department_id}", {"event_date": "2024-05-01", "title": "회의"})
    event = body["event"]
    listener = await connect()
    await listener.join(department_id)

    fault = FAULTS[fault_name](storage, monkeypatch)
    await fault.start()
    try:
        writes = [("POST", f"/api/events/{department_id}", {"event_date": "2024-05-02", "title": "새 회의", "description": BIG}),
                  ("PUT", f"/api/events/{event['id']}", {"description": BIG})]
        if fault.small_writes_fail:
            writes += [("POST", "/api/departments", {"name": "새 부서"}),
                       ("PUT", f"/api/departments/{department_id}", {"name": "개발2팀"}),
                       ("DELETE", f"/api/events/{event['id']}", None)]
        for method, path, payload in writes:
            status, body = await api(client, method, path, payload)
            assert (status, body["success"], body["code"]) == (503, False, "storage_unavailable"), (method, path)
            assert body["message"] == "저장소에 연결할 수 없습니다. 잠시 후 다시 시도해 주세요."
        status, body = await api(client, "GET", "/ready")
        assert (status, body["code"]) == (503, "storage_unavailable")
        assert (await api(client, "GET", "/health"))[0] == 200
        await listener.expect_nothing()  # open, answering, and told of no change

        _, events = await api(client, "GET", f"/api/events/{department_id}")
        assert events["events"] == [event]  # nothing half-written
        _, departments = await api(client, "GET", "/api/departments")
        assert [d["name"] for d in departments["departments"]] == ["개발팀"]
    finally:
        await fault.end()

    assert (await api(client, "GET", "/ready"))[0] == 200
    status, body = await api(client, "POST", f"/api/events/{department_id}", {"event_date": "2024-05-03", "title": "복구"})
    assert status == 201 and body["event"]["seq"] == event["seq"] + 1  # no seq lost to the failed writes
    push = await listener.receive()
    assert push == {"event": "event_created", "data": body["event"]}
    _, after = await api(client, "GET", f"/api/events/{department_id}")
    assert [e["title"] for e in after["events"]] == ["회의", "복구"]

    await storage.close()  # and what is on disk is exactly that, readable by a fresh start
    again = open_storage(backend, tmp_path)
    await again.open()
    try:
        assert [e.title for e in await again.list_events(department_id)] == ["회의", "복구"]
        assert (await again.feed_state(department_id)).seq == event["seq"] + 1
    finally:
        await again.close()
    if backend == "json":
        assert not list((tmp_path / "json").rglob("*.tmp"))  # the half-written temp files are gone


@pytest.mark.parametrize("fault_name", ["sqlite-locked"])
async def test_a_write_waiting_for_a_lock_that_is_let_go_in_time_succeeds(storage, http_server_client):
    _, body = await api(http_server_client, "POST", "/api/departments", {"name": "개발팀"})
    holder = sqlite3.connect(storage.options.path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    asyncio.get_running_loop().call_later(0.1, holder.execute, "ROLLBACK")
    status, _ = await api(http_server_client, "POST", f"/api/events/{body['department']['id']}",
                          {"event_date": "2024-05-01", "title": "회의"})
    holder.close()
    assert status == 201
