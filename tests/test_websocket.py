"""The WebSocket over a real socket: every row of contract section 3, on every backend."""
from __future__ import annotations

import asyncio
import json

import pytest
import tornado.httpclient
import tornado.websocket

from tests.client import SyncClient, api, make_department, make_event


async def test_connected_message(ws_url):
    connection = await tornado.websocket.websocket_connect(ws_url)
    try:
        frame = json.loads(await connection.read_message())
        assert frame["event"] == "connected"
        assert frame["data"]["message"] == "서버에 연결되었습니다." and frame["data"]["client_id"]
    finally:
        connection.close()


async def test_join_leave_with_id_echo(http_server_client, connect):
    department = await make_department(http_server_client)
    client = await connect()
    reply = await client.request("join_department", {"department_id": department["id"]}, 7)
    assert reply == {"event": "joined_department", "id": 7,
                     "data": {"department_id": department["id"], "message": "부서 그룹에 참여했습니다.",
                              "seq": 0, "epoch": department["epoch"]}}
    again = await client.request("join_department", {"department_id": department["id"]}, "again")
    assert again["event"] == "joined_department" and again["id"] == "again"
    reply = await client.request("leave_department", {"department_id": department["id"]}, "x" * 64)
    assert reply == {"event": "left_department", "id": "x" * 64,
                     "data": {"department_id": department["id"], "message": "부서 그룹에서 나갔습니다."}}
    reply = await client.request("leave_department", {"department_id": "never-joined"})
    assert reply["event"] == "left_department" and "id" not in reply


async def test_join_unknown_department(connect):
    client = await connect()
    reply = await client.request("join_department", {"department_id": "nope"}, 3)
    assert reply == {"event": "error", "id": 3, "data": {"message": "부서를 찾을 수 없습니다.", "code": "not_found",
                                                         "request": "join_department"}}


async def test_sync_request(http_server_client, connect):
    department = await make_department(http_server_client)
    for date in ("2024-01-22", "2024-01-20", "2024-01-21"):
        await make_event(http_server_client, department["id"], event_date=date)
    _, listed = await api(http_server_client, "GET", f"/api/events/{department['id']}")
    client = await connect()
    reply = await client.request("sync_request", {"department_id": department["id"]}, "s1")
    assert reply == {"event": "sync_response", "id": "s1",
                     "data": {"department_id": department["id"], "events": listed["events"], "deleted": [],
                              "seq": 3, "epoch": department["epoch"], "reset": True, "more": False}}
    reply = await client.request("sync_request", {"department_id": "nope"})
    assert (reply["event"], reply["data"]["code"], reply["data"]["request"]) == ("error", "not_found", "sync_request")


async def test_ping(connect):
    client = await connect()
    assert await client.request("ping", {}, 1) == {"event": "pong", "data": {}, "id": 1}
    await client.send_raw('{"event": "ping"}')
    assert await client.receive() == {"event": "pong", "data": {}}


@pytest.mark.parametrize("frame, code, request_name", [
    ("not json", "invalid_json", None),
    ("[1, 2]", "invalid_message", None),
    ('{"data": {}}', "invalid_message", None),
    ('{"event": 5, "data": {}}', "invalid_message", None),
    ('{"event": "ping", "data": []}', "invalid_message", "ping"),
    ('{"event": "ping", "data": {}, "id": true}', "invalid_message", "ping"),
    ('{"event": "ping", "data": {}, "id": 1.5}', "invalid_message", "ping"),
    ('{"event": "ping", "data": {}, "id": ["a"]}', "invalid_message", "ping"),
    ('{"event": "ping", "data": {}, "id": "%s"}' % ("x" * 65), "invalid_message", "ping"),
    ('{"event": "dance", "data": {}}', "unknown_event", "dance"),
    ('{"event": "join_department", "data": {}}', "validation_error", "join_department"),
    ('{"event": "join_department", "data": {"department_id": 5}}', "validation_error", "join_department"),
    ('{"event": "sync_request", "data": {"department_id": "  "}}', "validation_error", "sync_request"),
    ('{"event": "leave_department", "data": {"department_id": null}}', "validation_error", "leave_department"),
])
async def test_bad_frames_answer_error_and_keep_connection(connect, frame, code, request_name):
    client = await connect()
    await client.send_raw(frame)
    reply = await client.receive()
    assert reply["event"] == "error" and reply["data"]["code"] == code, reply
    assert reply["data"]["request"] == request_name and reply["data"]["message"]
    assert await client.request("ping", {}, "alive") == {"event": "pong", "data": {}, "id": "alive"}


async def test_error_echoes_a_valid_id(connect):
    client = await connect()
    reply = await client.request("dance", {}, "d1")
    assert reply["id"] == "d1" and reply["data"]["code"] == "unknown_event"


async def test_binary_frame(connect):
    client = await connect()
    await client.send_raw(b'{"event": "ping", "data": {}}')
    reply = await client.receive()
    assert (reply["event"], reply["data"]["code"]) == ("error", "invalid_message")
    assert (await client.request("ping"))["event"] == "pong"


async def test_oversized_frame_closes_with_1009(connect, server_config):
    client = await connect()
    await client.send("ping", {"pad": "x" * (server_config.max_message_bytes + 1)})
    assert await asyncio.wait_for(client.connection.read_message(), 10) is None
    assert client.connection.close_code == 1009


async def test_pushes_reach_the_room_only(http_server_client, connect):
    dev = await make_department(http_server_client, "개발팀")
    marketing = await make_department(http_server_client, "마케팅팀")
    member, other, lobby = await connect(), await connect(), await connect()
    await member.join(dev["id"])
    await other.join(marketing["id"])

    event = await make_event(http_server_client, dev["id"])
    assert await member.receive() == {"event": "event_created", "data": event}
    status, body = await api(http_server_client, "PUT", f"/api/events/{event['id']}", {"title": "수정"})
    assert await member.receive() == {"event": "event_updated", "data": body["event"]}
    await api(http_server_client, "DELETE", f"/api/events/{event['id']}")
    assert await member.receive() == {"event": "event_deleted",
                                      "data": {"id": event["id"], "department_id": dev["id"], "seq": 3}}

    await other.expect_nothing()
    await lobby.expect_nothing()


async def test_left_room_gets_nothing(http_server_client, connect):
    dev = await make_department(http_server_client)
    client = await connect()
    await client.join(dev["id"])
    await client.request("leave_department", {"department_id": dev["id"]})
    await make_event(http_server_client, dev["id"])
    await client.expect_nothing()


async def test_department_pushes_reach_every_connection(http_server_client, connect, hub):
    joined, lobby = await connect(), await connect()
    status, body = await api(http_server_client, "POST", "/api/departments", {"name": "개발팀"})
    department = body["department"]
    assert await joined.receive() == {"event": "department_created", "data": department}
    assert await lobby.receive() == {"event": "department_created", "data": department}

    await joined.join(department["id"])
    await make_event(http_server_client, department["id"])
    assert (await joined.receive())["event"] == "event_created"
    assert hub.members(department["id"]) == 1

    await api(http_server_client, "DELETE", f"/api/departments/{department['id']}")
    for client in (joined, lobby):
        assert await client.receive() == {"event": "department_deleted", "data": {"id": department["id"]}}
    assert hub.members(department["id"]) == 0
    await joined.expect_nothing()  # no event_deleted per event


async def test_rest_caller_connection_gets_its_own_push(http_server_client, connect):
    department = await make_department(http_server_client)
    caller = await connect()
    await caller.join(department["id"])
    event = await make_event(http_server_client, department["id"])  # the same person, over REST
    assert await caller.receive() == {"event": "event_created", "data": event}


async def test_hundred_rapid_updates_arrive_in_order(http_server_client, connect):
    department = await make_department(http_server_client)
    event = await make_event(http_server_client, department["id"])
    client = await connect()
    await client.join(department["id"])
    results = await asyncio.gather(*(api(http_server_client, "PUT", f"/api/events/{event['id']}", {"description": str(i)})
                                     for i in range(100)))
    assert all(status == 200 for status, _ in results)
    versions = [(await client.receive())["data"]["version"] for _ in range(100)]
    assert versions == list(range(2, 102))


async def test_two_hundred_clients_in_one_room(http_server_client, connect):
    department = await make_department(http_server_client)
    clients = await asyncio.gather(*(connect() for _ in range(200)))
    await asyncio.gather(*(client.join(department["id"]) for client in clients))
    event = await make_event(http_server_client, department["id"])
    frames = await asyncio.gather(*(client.receive() for client in clients))
    assert all(frame == {"event": "event_created", "data": event} for frame in frames)
    await asyncio.gather(*(client.expect_nothing(0) for client in clients[:5]))


async def test_origin_policy(ws_url, connect, app, http_server_client):
    host = http_server_client.get_url("").split("://")[1]
    await connect()  # no Origin: desktop apps and scripts
    await connect(headers={"Origin": f"http://{host}"})  # our own origin
    with pytest.raises(tornado.httpclient.HTTPClientError) as refused:
        await SyncClient.connect(ws_url, headers={"Origin": "https://evil.example"})
    assert refused.value.code == 403
    app.settings["context"].allowed_origins = ("https://calendar.example",)
    await connect(headers={"Origin": "https://calendar.example"})
    app.settings["context"].allowed_origins = ("*",)
    await connect(headers={"Origin": "https://anywhere.example"})


async def test_a_handshake_for_another_host_name_is_refused(ws_url):
    """Contract 13: the WebSocket's "own origin" comes from Host, so Host is checked first."""
    port = ws_url.rsplit(":", 1)[1].split("/")[0]
    with pytest.raises(tornado.httpclient.HTTPClientError) as refused:
        await SyncClient.connect(ws_url, headers={"Host": f"rebound.example:{port}",
                                                  "Origin": f"http://rebound.example:{port}"})
    assert refused.value.code == 400
