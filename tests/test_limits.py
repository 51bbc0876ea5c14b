"""Limits (contract 9.3): connections, message rate, rooms per connection, slow consumers."""
from __future__ import annotations

import asyncio
import json
import socket
import time

import pytest
import tornado.httpclient
import tornado.websocket

from calsync.app import make_app
from calsync.server.config import LimitsConfig
from tests.client import MEETING, SyncClient, api, make_department

pytestmark = pytest.mark.usefixtures("http_server")
LIMITS = LimitsConfig(max_connections=3, messages_per_second=5, rooms_per_connection=2, send_buffer_bytes=16 * 1024)


@pytest.fixture(params=["memory"])
def backend(request) -> str:
    return request.param


@pytest.fixture
def app(storage, hub, server_config, backend):
    return make_app(storage, hub, server_config, backend, limits=LIMITS)


async def wait_for(condition, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.02)


async def test_max_connections_answers_503_server_busy(ws_url, app):
    clients = [await SyncClient.connect(ws_url) for _ in range(3)]
    with pytest.raises(tornado.httpclient.HTTPClientError) as refused:
        await tornado.websocket.websocket_connect(ws_url)
    assert refused.value.code == 503
    assert b'"code": "server_busy"' in refused.value.response.body
    clients.pop().close()
    await wait_for(lambda: app.settings["context"].broker.members() == 2)
    clients.append(await SyncClient.connect(ws_url))
    for client in clients:
        client.close()


async def test_rate_limited_then_closed_with_1008(connect):
    client = await connect()
    for i in range(30):
        await client.send("ping", {}, i)
    replies = [await client.receive() for _ in range(30)]
    limited = [r for r in replies if r["event"] == "error"]
    assert len(replies) - len(limited) >= 10 and limited  # the burst of 10 passes, then the rate holds
    assert all(r["data"]["code"] == "rate_limited" and r["data"]["request"] is None for r in limited)
    await asyncio.sleep(0.5)
    assert (await client.request("ping"))["event"] == "pong"  # the budget refills: still open
    deadline = time.monotonic() + 8
    while client.connection.close_code is None and time.monotonic() < deadline:
        try:
            await client.send("ping")
        except tornado.websocket.WebSocketClosedError:
            break
        await asyncio.sleep(0.01)
    assert await asyncio.wait_for(drain(client), 5) == 1008


async def drain(client: SyncClient) -> int:
    while await client.connection.read_message() is not None:
        pass
    return client.connection.close_code


async def test_rooms_per_connection(http_server_client, connect):
    departments = [await make_department(http_server_client, f"팀{i}") for i in range(3)]
    client = await connect()
    for department in departments[:2]:
        await client.join(department["id"])
    reply = await client.request("join_department", {"department_id": departments[2]["id"]})
    assert (reply["event"], reply["data"]["code"]) == ("error", "limit_exceeded")
    await client.join(departments[0]["id"])  # joining one it is in is not one more
    await client.request("leave_department", {"department_id": departments[1]["id"]})
    await client.join(departments[2]["id"])


def slow_websocket(ws_url: str) -> socket.socket:
    """A raw socket that asked for a WebSocket upgrade, with a receive buffer kept small so
    the server soon sees whether it reads."""
    port = int(ws_url.rsplit(":", 1)[1].split("/")[0])
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", port))
    sock.sendall(b"GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                 b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
    return sock


async def test_a_client_that_stops_reading_is_closed_and_the_room_keeps_receiving(http_server_client, ws_url, app,
                                                                                     connect):
    department = await make_department(http_server_client)
    reader = await connect()
    await reader.join(department["id"])
    slow = slow_websocket(ws_url)
    join = f'{{"event": "join_department", "data": {{"department_id": "{department["id"]}"}}}}'.encode()
    mask = b"\0\0\0\0"
    slow.sendall(bytes((0x81, 0x80 | 126)) + len(join).to_bytes(2, "big") + mask + join)  # masked, zero key
    await wait_for(lambda: app.settings["context"].broker.members(department["id"]) == 2)
    broker = app.settings["context"].broker
    big = {**MEETING, "description": "가" * 5000}  # 15 KB a push: past the kernel's socket buffers soon
    created = 0
    while broker.members(department["id"]) == 2 and created < 1000:
        status, _ = await api(http_server_client, "POST", f"/api/events/{department['id']}", big)
        assert status == 201
        created += 1
        assert (await reader.receive())["event"] == "event_created"  # on time, every one
    assert broker.members(department["id"]) == 1 and created < 1000
    status, _ = await api(http_server_client, "POST", f"/api/events/{department['id']}", MEETING)
    assert (await reader.receive())["event"] == "event_created"
    slow.close()


async def test_an_answer_the_client_asked_for_is_never_cut_by_the_send_buffer(http_server_client, ws_url, app):
    """Contract 13: a department much bigger than `send_buffer_bytes` still syncs over the
    WebSocket to a client that reads slowly, and the connection goes on afterwards."""
    app.settings["context"].limits = LimitsConfig(send_buffer_bytes=64 * 1024)
    department = await make_department(http_server_client)
    for i in range(300):  # ~4.5 MB of answer: more than the kernel's buffers hold, and the send buffer
        status, _ = await api(http_server_client, "POST", f"/api/events/{department['id']}",
                              {**MEETING, "title": f"긴 일정 {i}", "description": "가" * 5000})
        assert status == 201
    client = slow_websocket(ws_url)
    request = f'{{"event": "sync_request", "data": {{"department_id": "{department["id"]}"}}, "id": 1}}'.encode()
    client.sendall(bytes((0x81, 0x80 | 126)) + len(request).to_bytes(2, "big") + b"\0\0\0\0" + request)
    await asyncio.sleep(1)  # not reading: the answer piles up in the server's buffers
    loop = asyncio.get_running_loop()
    client.setblocking(False)
    received = b""
    frames = []
    deadline = loop.time() + 30
    while not any(b'"sync_response"' in frame for frame in frames):
        assert loop.time() < deadline, f"no whole answer: {len(received)} bytes"
        try:
            chunk = await loop.sock_recv(client, 65536)
        except ConnectionError:
            chunk = b""
        assert chunk, "the server closed the connection"
        received += chunk
        frames, received = _frames(received, frames)
    answer = json.loads(next(frame for frame in frames if b'"sync_response"' in frame))
    assert answer["id"] == 1 and len(answer["data"]["events"]) == 300
    ping = b'{"event": "ping", "data": {}, "id": 2}'
    await loop.sock_sendall(client, bytes((0x81, 0x80 | len(ping))) + b"\0\0\0\0" + ping)
    while not any(b'"pong"' in frame for frame in frames):
        received += await loop.sock_recv(client, 65536)
        frames, received = _frames(received, frames)
    client.close()


def _frames(data: bytes, frames: list[bytes]) -> tuple[list[bytes], bytes]:
    """Whole server frames (unmasked) off the front of `data` (after the handshake's answer)."""
    if data.startswith(b"HTTP/1.1"):
        if b"\r\n\r\n" not in data:
            return frames, data
        data = data.split(b"\r\n\r\n", 1)[1]
    while len(data) >= 2:
        length, start = data[1] & 0x7F, 2
        if length == 126:
            if len(data) < 4:
                break
            length, start = int.from_bytes(data[2:4], "big"), 4
        elif length == 127:
            if len(data) < 10:
                break
            length, start = int.from_bytes(data[2:10], "big"), 10
        if len(data) < start + length:
            break
        frames = [*frames, data[start:start + length]]
        data = data[start + length:]
    return frames, data
