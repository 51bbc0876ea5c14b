"""Staying in sync (contract section 8) over real sockets, on every backend."""
from __future__ import annotations

import asyncio

import pytest
from pytest_tornasync.plugin import AsyncHTTPServerClient
from tornado.testing import bind_unused_port

from calsync.app import make_app
from calsync.handlers.connections import HttpServer
from calsync.server.hub import Hub
from calsync.storage.base import Storage
from tests.client import MEETING, SyncClient, api, api_full, make_department, make_event

pytestmark = pytest.mark.usefixtures("http_server")


async def events_of(client, department_id: str, query: str = "") -> dict:
    status, body = await api(client, "GET", f"/api/events/{department_id}{query}")
    assert status == 200, body
    return body


# -- 8.1 editing a department ------------------------------------------------------------
async def test_put_department_changes_it_and_pushes_to_every_connection(http_server_client, connect):
    department = await make_department(http_server_client, "개발팀", "옛 설명")
    lobby = await connect()
    await asyncio.sleep(0.002)
    status, body = await api(http_server_client, "PUT", f"/api/departments/{department['id']}",
                             {"name": " 플랫폼팀 ", "id": "ignored"})
    assert status == 200 and body["success"] is True
    changed = body["department"]
    assert (changed["id"], changed["name"], changed["description"]) == (department["id"], "플랫폼팀", "옛 설명")
    assert changed["updated_at"] > department["updated_at"] and changed["created_at"] == department["created_at"]
    assert await lobby.receive() == {"event": "department_updated", "data": changed}
    _, got = await api(http_server_client, "GET", f"/api/departments/{department['id']}")
    assert got["department"] == changed
    # the old name is free again, the new one taken
    assert (await api(http_server_client, "POST", "/api/departments", {"name": "개발팀"}))[0] == 201
    status, body = await api(http_server_client, "PUT", f"/api/departments/{department['id']}", {"name": "개발팀"})
    assert (status, body["code"], body["message"]) == (409, "conflict", "이미 존재하는 부서 이름입니다.")


async def test_put_department_errors(http_server_client):
    department = await make_department(http_server_client)
    assert await api(http_server_client, "PUT", "/api/departments/nope", {"name": "x"}) == (
        404, {"success": False, "message": "부서를 찾을 수 없습니다.", "code": "not_found"})
    for body in ({}, {"unknown": 1}, {"name": ""}, {"name": "x" * 101}, {"description": 5}):
        status, answer = await api(http_server_client, "PUT", f"/api/departments/{department['id']}", body)
        assert (status, answer["code"]) == (400, "validation_error"), body
    status, answer = await api(http_server_client, "PUT", f"/api/departments/{department['id']}", raw=b"[1]")
    assert (status, answer["code"]) == (400, "invalid_json")


async def test_concurrent_renames_to_one_name_one_wins(http_server_client):
    departments = [await make_department(http_server_client, f"팀{i}") for i in range(6)]
    answers = await asyncio.gather(*(api(http_server_client, "PUT", f"/api/departments/{d['id']}", {"name": "같은팀"})
                                     for d in departments))
    assert sorted(status for status, _ in answers) == [200] + [409] * 5
    _, listed = await api(http_server_client, "GET", "/api/departments")
    assert [d["name"] for d in listed["departments"]].count("같은팀") == 1


# -- 8.2 conflicts ------------------------------------------------------------------------
async def test_etag_and_if_match(http_server_client):
    department = await make_department(http_server_client)
    status, body, headers = await api_full(http_server_client, "POST", f"/api/events/{department['id']}", MEETING)
    event = body["event"]
    assert (status, headers["ETag"]) == (201, '"1"')
    path = f"/api/events/{event['id']}"

    status, body, headers = await api_full(http_server_client, "PUT", path, {"title": "둘"}, headers={"If-Match": '"1"'})
    assert (status, body["event"]["version"], headers["ETag"]) == (200, 2, '"2"')
    status, body = await api(http_server_client, "PUT", path, {"title": "셋"}, headers={"If-Match": '"1"'})
    assert status == 412
    assert (body["success"], body["code"], body["message"]) == (False, "version_conflict",
                                                                 "다른 사용자가 이벤트를 먼저 수정했습니다.")
    assert (body["event"]["title"], body["event"]["version"]) == ("둘", 2)
    version = 2
    for tags in ('"7", "{v}"', "*", '"{v}" , W/"9"'):
        tags = tags.replace("{v}", str(version))
        status, body = await api(http_server_client, "PUT", path, {"description": tags}, headers={"If-Match": tags})
        assert status == 200, tags
        version = body["event"]["version"]
    for tags in (f'W/"{version}"', "garbage", f'"{version + 1}"', '""'):
        assert (await api(http_server_client, "PUT", path, {"title": "x"}, headers={"If-Match": tags}))[0] == 412, tags
    # a body's version is still ignored, as before
    status, body = await api(http_server_client, "PUT", path, {"title": "무시", "version": 1})
    assert (status, body["event"]["version"]) == (200, version + 1)

    status, body = await api(http_server_client, "DELETE", path, headers={"If-Match": '"1"'})
    assert (status, body["code"], body["event"]["version"]) == (412, "version_conflict", version + 1)
    assert (await api(http_server_client, "GET", f"/api/events/{department['id']}"))[1]["events"] != []
    assert (await api(http_server_client, "DELETE", path, headers={"If-Match": f'"{version + 1}"'}))[0] == 200
    assert (await api(http_server_client, "PUT", "/api/events/nope", {"title": "x"}, headers={"If-Match": '"1"'}))[0] == 404


async def test_twenty_concurrent_puts_with_one_if_match_exactly_one_wins(http_server_client, connect):
    department = await make_department(http_server_client)
    event = await make_event(http_server_client, department["id"])
    member = await connect()
    await member.join(department["id"])
    answers = await asyncio.gather(*(
        api(http_server_client, "PUT", f"/api/events/{event['id']}", {"title": f"편집 {i}"}, headers={"If-Match": '"1"'})
        for i in range(20)))
    assert sorted(status for status, _ in answers) == [200] + [412] * 19
    winner = next(body["event"] for status, body in answers if status == 200)
    assert all(body["event"] == winner for status, body in answers if status == 412)
    assert await member.receive() == {"event": "event_updated", "data": winner}
    await member.expect_nothing()


# -- 8.3 idempotent creates ---------------------------------------------------------------
async def test_idempotent_event_create_replays_and_pushes_once(http_server_client, connect):
    department = await make_department(http_server_client)
    member = await connect()
    await member.join(department["id"])
    path, key = f"/api/events/{department['id']}", {"Idempotency-Key": "create-1"}
    first = await api_full(http_server_client, "POST", path, MEETING, headers=key)
    again = await api_full(http_server_client, "POST", path, MEETING, headers=key)
    assert (first[0], again[0]) == (201, 201) and first[1] == again[1]
    assert "Idempotent-Replayed" not in first[2] and again[2]["Idempotent-Replayed"] == "true"
    assert again[2]["ETag"] == '"1"'
    assert len((await events_of(http_server_client, department["id"]))["events"]) == 1
    assert (await member.receive())["data"] == first[1]["event"]
    await member.expect_nothing()

    status, body = await api(http_server_client, "POST", path, {**MEETING, "title": "다른 본문"}, headers=key)
    assert (status, body["code"]) == (422, "idempotency_mismatch")
    # the same key on another path is another key
    other = await make_department(http_server_client, "다른팀")
    assert (await api(http_server_client, "POST", f"/api/events/{other['id']}", MEETING, headers=key))[0] == 201


async def test_idempotent_department_create(http_server_client):
    headers = {"Idempotency-Key": "dept-1"}
    first = await api(http_server_client, "POST", "/api/departments", {"name": "개발팀"}, headers=headers)
    again = await api(http_server_client, "POST", "/api/departments", {"name": "개발팀"}, headers=headers)
    assert first == again and first[0] == 201
    status, body = await api(http_server_client, "POST", "/api/departments", {"name": "인사팀"}, headers=headers)
    assert (status, body["code"]) == (422, "idempotency_mismatch")
    assert len((await api(http_server_client, "GET", "/api/departments"))[1]["departments"]) == 1


async def test_a_failed_create_keeps_no_key_and_bad_keys_are_refused(http_server_client):
    department = await make_department(http_server_client)
    path, headers = f"/api/events/{department['id']}", {"Idempotency-Key": "retry-me"}
    assert (await api(http_server_client, "POST", path, {"title": "날짜 없음"}, headers=headers))[0] == 400
    assert (await api(http_server_client, "POST", "/api/events/nope", MEETING, headers=headers))[0] == 404
    assert (await api(http_server_client, "POST", path, MEETING, headers=headers))[0] == 201
    for bad in ("", "x" * 256, "tab\there"):
        status, body = await api(http_server_client, "POST", path, MEETING, headers={"Idempotency-Key": bad})
        assert (status, body["code"]) == (400, "validation_error"), bad
    assert (await api(http_server_client, "POST", path, MEETING, headers={"Idempotency-Key": "x" * 255}))[0] == 201


async def test_concurrent_retries_of_one_create_make_one_record(http_server_client):
    department = await make_department(http_server_client)
    path, headers = f"/api/events/{department['id']}", {"Idempotency-Key": "flaky-network"}
    answers = await asyncio.gather(*(api(http_server_client, "POST", path, MEETING, headers=headers) for _ in range(10)))
    created = [body["event"]["id"] for status, body in answers if status == 201]
    assert created and len(set(created)) == 1
    assert all(status in (201, 409) for status, _ in answers)
    assert all(body["code"] == "idempotency_in_progress" for status, body in answers if status == 409)
    assert len((await events_of(http_server_client, department["id"]))["events"]) == 1


# -- 8.4 / 8.5 the change feed ------------------------------------------------------------
async def test_seq_is_consecutive_and_carried_by_records_and_pushes(http_server_client, connect):
    department = await make_department(http_server_client)
    assert (department["seq"], len(department["epoch"]) > 0) == (0, True)
    member = await connect()
    await member.join(department["id"])
    one = await make_event(http_server_client, department["id"])
    two = await make_event(http_server_client, department["id"], title="둘")
    _, body = await api(http_server_client, "PUT", f"/api/events/{one['id']}", {"title": "하나"})
    await api(http_server_client, "DELETE", f"/api/events/{two['id']}")
    assert (one["seq"], two["seq"], body["event"]["seq"]) == (1, 2, 3)
    pushes = [await member.receive() for _ in range(4)]
    assert [p["event"] for p in pushes] == ["event_created", "event_created", "event_updated", "event_deleted"]
    assert [p["data"]["seq"] for p in pushes] == [1, 2, 3, 4]
    _, got = await api(http_server_client, "GET", f"/api/departments/{department['id']}")
    assert (got["department"]["seq"], got["department"]["epoch"]) == (4, department["epoch"])
    other = await make_department(http_server_client, "다른팀")
    assert (await make_event(http_server_client, other["id"]))["seq"] == 1  # a feed per department


async def test_incremental_answers_with_tombstones(http_server_client, connect):
    department = await make_department(http_server_client)
    epoch = department["epoch"]
    kept = await make_event(http_server_client, department["id"], title="남음")
    gone = await make_event(http_server_client, department["id"], title="지움")
    cursor = (await events_of(http_server_client, department["id"]))["seq"]
    assert cursor == 2
    changed = (await api(http_server_client, "PUT", f"/api/events/{kept['id']}", {"title": "바뀜"}))[1]["event"]
    await api(http_server_client, "DELETE", f"/api/events/{gone['id']}")
    added = await make_event(http_server_client, department["id"], event_date="2023-12-31", title="새것")

    body = await events_of(http_server_client, department["id"], f"?since={cursor}&epoch={epoch}")
    assert body == {"success": True, "events": [changed, added], "deleted": [{"id": gone["id"], "seq": 4}],
                    "seq": 5, "epoch": epoch, "reset": False, "more": False}
    client = await connect()
    reply = await client.request("sync_request", {"department_id": department["id"], "since": cursor, "epoch": epoch}, 1)
    assert reply == {"event": "sync_response", "id": 1, "data": {"department_id": department["id"],
                                                                  **{k: v for k, v in body.items() if k != "success"}}}
    assert await events_of(http_server_client, department["id"], f"?since=5&epoch={epoch}") == {
        "success": True, "events": [], "deleted": [], "seq": 5, "epoch": epoch, "reset": False, "more": False}
    # since=0 with the right epoch is the whole history, tombstones included
    body = await events_of(http_server_client, department["id"], f"?since=0&epoch={epoch}")
    assert ([e["id"] for e in body["events"]], body["deleted"], body["reset"]) == (
        [kept["id"], added["id"]], [{"id": gone["id"], "seq": 4}], False)


async def test_resets(http_server_client):
    department = await make_department(http_server_client)
    await make_event(http_server_client, department["id"])
    full = await events_of(http_server_client, department["id"])
    assert full["reset"] is True and full["deleted"] == []
    for query in ("?since=0&epoch=another", "?since=1", f"?since=99&epoch={department['epoch']}"):
        body = await events_of(http_server_client, department["id"], query)
        assert body == full, query


async def test_paging_with_limit(http_server_client):
    department = await make_department(http_server_client)
    epoch = department["epoch"]
    made = [await make_event(http_server_client, department["id"], title=f"{i}") for i in range(7)]
    await api(http_server_client, "DELETE", f"/api/events/{made[2]['id']}")
    seen, deleted, since, pages = [], [], 0, 0
    while True:
        body = await events_of(http_server_client, department["id"], f"?since={since}&epoch={epoch}&limit=3")
        pages += 1
        assert len(body["events"]) + len(body["deleted"]) <= 3
        seen += [e["id"] for e in body["events"]]
        deleted += body["deleted"]
        since = body["seq"]
        if not body["more"]:
            break
    assert pages == 3 and since == 8
    assert seen == [e["id"] for i, e in enumerate(made) if i != 2] and deleted == [{"id": made[2]["id"], "seq": 8}]


async def test_bad_cursor_arguments(http_server_client, connect):
    department = await make_department(http_server_client)
    base = f"/api/events/{department['id']}"
    for query in ("?since=-1", "?since=x", "?since=1.5", "?limit=0", "?limit=x", f"?since=1&epoch={'e' * 65}",
                  "?since=0&epoch=e&from=2024-01-01", "?since=0&to=2024-01-01", f"?since={2**60}"):
        status, body = await api(http_server_client, "GET", base + query)
        assert (status, body["code"]) == (400, "validation_error"), query
    client = await connect()
    for data in ({"since": "1"}, {"since": True}, {"since": -3}, {"limit": 0}, {"epoch": 5}):
        reply = await client.request("sync_request", {"department_id": department["id"], **data})
        assert (reply["event"], reply["data"]["code"]) == ("error", "validation_error"), data
    assert (await client.request("ping"))["event"] == "pong"


async def test_etag_and_if_none_match_on_the_plain_list(http_server_client):
    department = await make_department(http_server_client)
    path = f"/api/events/{department['id']}"
    status, body, headers = await api_full(http_server_client, "GET", path)
    etag = headers["ETag"]
    assert (status, etag) == (200, f'"{department["epoch"]}.0"')
    for tags in (etag, f'W/{etag}', f'"x", {etag}', "*"):
        status, body, headers = await api_full(http_server_client, "GET", path, headers={"If-None-Match": tags})
        assert (status, body, headers["ETag"]) == (304, None, etag), tags
    await make_event(http_server_client, department["id"])
    status, body, headers = await api_full(http_server_client, "GET", path, headers={"If-None-Match": etag})
    assert (status, len(body["events"]), headers["ETag"]) == (200, 1, f'"{department["epoch"]}.1"')
    assert (await api(http_server_client, "GET", "/api/events/nope", headers={"If-None-Match": etag}))[0] == 404


async def test_purged_tombstones_raise_the_horizon_and_reset_older_cursors(http_server_client, storage):
    department = await make_department(http_server_client)
    epoch = department["epoch"]
    event = await make_event(http_server_client, department["id"])
    await api(http_server_client, "DELETE", f"/api/events/{event['id']}")
    kept = await make_event(http_server_client, department["id"], title="남음")
    assert await storage.purge(3600) == 0  # not old enough yet
    assert (await events_of(http_server_client, department["id"], f"?since=0&epoch={epoch}"))["reset"] is False
    assert await storage.purge(0) >= 1
    body = await events_of(http_server_client, department["id"], f"?since=0&epoch={epoch}")
    assert (body["reset"], [e["id"] for e in body["events"]], body["deleted"]) == (True, [kept["id"]], [])
    body = await events_of(http_server_client, department["id"], f"?since=2&epoch={epoch}")
    assert (body["reset"], [e["id"] for e in body["events"]]) == (False, [kept["id"]])


# -- 8.6 catch-up on join -----------------------------------------------------------------
async def test_join_with_a_cursor_catches_up(http_server_client, connect):
    department = await make_department(http_server_client)
    epoch = department["epoch"]
    first = await make_event(http_server_client, department["id"])
    second = await make_event(http_server_client, department["id"], title="둘")
    await api(http_server_client, "DELETE", f"/api/events/{first['id']}")
    client = await connect()
    reply = await client.request("join_department", {"department_id": department["id"], "since": 1, "epoch": epoch}, 9)
    assert reply == {"event": "joined_department", "id": 9, "data": {
        "department_id": department["id"], "message": "부서 그룹에 참여했습니다.", "events": [second],
        "deleted": [{"id": first["id"], "seq": 3}], "seq": 3, "epoch": epoch, "reset": False, "more": False}}
    reply = await client.request("join_department", {"department_id": department["id"], "since": 1, "epoch": "old"})
    assert (reply["data"]["reset"], reply["data"]["events"], reply["data"]["seq"]) == (True, [second], 3)
    third = await make_event(http_server_client, department["id"], title="셋")
    assert await client.receive() == {"event": "event_created", "data": third}


async def join_during_a_burst(http_client, ws_url: str, writes: int = 60) -> None:
    """Two writers flat out; a client joins from seq 0 in the middle of it. The catch-up and
    the pushes after it must hold every change exactly once, in order."""
    _, body = await api(http_client, "POST", "/api/departments", {"name": "개발팀"})
    department = body["department"]
    path = f"/api/events/{department['id']}"

    async def writer(n: int) -> None:
        for i in range(n):
            await api(http_client, "POST", path, {**MEETING, "title": f"{i}"})

    burst = asyncio.ensure_future(asyncio.gather(writer(writes // 2), writer(writes // 2)))
    await asyncio.sleep(0.05)
    client = await SyncClient.connect(ws_url)
    try:
        reply = await client.request("join_department", {"department_id": department["id"], "since": 0,
                                                         "epoch": department["epoch"]})
        assert reply["event"] == "joined_department" and reply["data"]["reset"] is False
        seqs = [e["seq"] for e in reply["data"]["events"]]
        last = reply["data"]["seq"]
        assert seqs == list(range(1, last + 1))
        await burst
        while last < writes:
            push = await client.receive()
            assert push["event"] == "event_created"
            seqs.append(push["data"]["seq"])
            last = push["data"]["seq"]
        assert seqs == list(range(1, writes + 1))  # every change once, in order, no gap
        await client.expect_nothing()
    finally:
        client.close()


async def test_join_during_a_burst_of_writes_gets_every_change_exactly_once(http_server_client, ws_url):
    await join_during_a_burst(http_server_client, ws_url)


class SlowReads:
    """A storage whose feed reads answer late, as over a slow network: writes made meanwhile
    are published while the joining client waits for its catch-up."""

    def __init__(self, storage: Storage) -> None:
        self._storage = storage

    def __getattr__(self, name: str):
        return getattr(self._storage, name)

    async def feed_state(self, department_id: str):
        state = await self._storage.feed_state(department_id)
        await asyncio.sleep(0.05)
        return state

    async def read_feed(self, *args, **kwargs):
        page = await self._storage.read_feed(*args, **kwargs)
        await asyncio.sleep(0.05)
        return page


@pytest.mark.parametrize("backend", ["sqlite", "dynamodb"])
async def test_join_while_the_catch_up_read_answers_late(storage):
    sock, port = bind_unused_port()
    server = HttpServer(make_app(SlowReads(storage), Hub()))
    server.add_sockets([sock])
    client = AsyncHTTPServerClient(http_server=server, force_instance=True)
    try:
        await join_during_a_burst(client, f"ws://127.0.0.1:{port}/ws")
    finally:
        client.close()
        server.stop()


async def test_unknown_fields_in_join_and_plain_sync_stay_compatible(http_server_client, connect):
    department = await make_department(http_server_client)
    client = await connect()
    reply = await client.request("sync_request", {"department_id": department["id"], "extra": 1})
    assert reply["data"]["reset"] is True
    reply = await client.request("join_department", {"department_id": department["id"], "limit": 5})
    assert set(reply["data"]) == {"department_id", "message", "seq", "epoch"}


# -- 8.7 heartbeats ------------------------------------------------------------------------
async def read_frame(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    """One unmasked server frame: (opcode, payload)."""
    first, second = await reader.readexactly(2)
    length = second & 0x7F
    if length == 126:
        length = int.from_bytes(await reader.readexactly(2), "big")
    elif length == 127:
        length = int.from_bytes(await reader.readexactly(8), "big")
    return first & 0x0F, await reader.readexactly(length)


@pytest.mark.parametrize("backend", ["memory"])
async def test_a_client_that_never_answers_pings_is_closed(app, http_server_client):
    from calsync.server.heartbeat import Heartbeat

    heartbeat = Heartbeat(app.settings["context"].broker.connections, 0.1, 0.2)
    heartbeat.start()
    try:
        answering = await SyncClient.connect(http_server_client.get_url("/ws").replace("http", "ws"))
        # A raw socket that does the handshake, then never answers anything.
        port = int(http_server_client.get_url("/").split(":")[2].split("/")[0])
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                     b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
        assert b" 101 " in await reader.readuntil(b"\r\n\r\n")
        opcodes = []
        while not opcodes or opcodes[-1] != 0x8:
            opcode, payload = await asyncio.wait_for(read_frame(reader), 5)
            opcodes.append(opcode)
        assert opcodes[0] == 0x1 and 0x9 in opcodes  # connected, pinged, then closed
        assert int.from_bytes(payload[:2], "big") == 1001 and payload[2:] == b"ping timeout"
        writer.close()
        for _ in range(100):
            if app.settings["context"].broker.members() == 1:
                break
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.5)  # several more rounds: the answering client stays
        assert (await answering.request("ping"))["event"] == "pong"
        assert app.settings["context"].broker.members() == 1
        answering.close()
    finally:
        heartbeat.stop()
