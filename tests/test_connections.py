"""HTTP connections (contract 13): header and body limits answered in JSON, idle and slow
requests closed, unmasked WebSocket frames refused — over raw sockets, as a hostile or
careless client would send them."""
from __future__ import annotations

import asyncio
import base64
import json
import os
import socket
import time

import pytest
from tornado.testing import bind_unused_port

from calsync.handlers.connections import HttpServer
from tests.process import ServerProcess
from tests.rawhttp import KeepAliveConnection


@pytest.fixture(params=["memory"])
def backend(request) -> str:
    return request.param


LIMIT = 64 * 1024  # the test server's max_body_bytes (conftest)


def read_answer(data: bytes) -> tuple[int, dict[str, str], dict]:
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines)}
    return int(status_line.split()[1]), headers, json.loads(body[:int(headers["content-length"])])


async def exchange(port: int, data: bytes, timeout: float = 10.0) -> bytes:
    """Send `data` (writing on while the server reads), then read until the server closes."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(data)
    received = b""
    try:
        while chunk := await asyncio.wait_for(reader.read(65536), timeout):
            received += chunk
    except ConnectionResetError:
        pass  # the server closed with our unread bytes: the answer came before
    writer.close()
    return received


def port_of(base_url: str) -> int:
    return int(base_url.rsplit(":", 1)[1].split("/")[0])


@pytest.mark.parametrize("size", [70_000, 500_000])
async def test_headers_over_64_kib_get_431_json(http_server, base_url, size):
    answer = await exchange(port_of(base_url), b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: "
                            + b"a" * size + b"\r\n\r\n")
    status, headers, body = read_answer(answer)
    assert (status, body["success"], body["code"]) == (431, False, "too_large")
    assert body["message"] == "요청 헤더가 너무 큽니다." and headers["connection"] == "close"


async def test_headers_under_64_kib_are_served(http_server, base_url):
    connection = await KeepAliveConnection.open(base_url)
    status, _, _ = await connection.request("GET", "/health", headers={"X-Big": "a" * 60_000})
    assert status == 200
    connection.close()


def chunked(total: int, piece: int = 16_000) -> bytes:
    pieces = [b"%x\r\n%s\r\n" % (min(piece, total - at), b"x" * min(piece, total - at)) for at in range(0, total, piece)]
    return b"".join(pieces) + b"0\r\n\r\n"


@pytest.mark.parametrize("path", ["/api/departments", "/app/", "/ws", "/no/such/route"])
async def test_a_chunked_body_over_the_limit_gets_413_json(http_server, base_url, path):
    answer = await exchange(port_of(base_url), f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                            "Transfer-Encoding: chunked\r\nContent-Type: application/json\r\n\r\n".encode()
                            + chunked(4 * LIMIT))
    status, headers, body = read_answer(answer)
    assert (status, body["code"], headers["connection"]) == (413, "too_large", "close")


async def test_one_huge_chunk_gets_413_json(http_server, base_url):
    """A chunk that declares more than the limit: answered as its bytes arrive, not by its size line."""
    answer = await exchange(port_of(base_url), b"POST /api/departments HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                            b"Transfer-Encoding: chunked\r\n\r\n" + b"%x\r\n" % (50 * LIMIT) + b"x" * (2 * LIMIT))
    status, _, body = read_answer(answer)
    assert (status, body["code"]) == (413, "too_large")


async def test_a_chunked_body_within_the_limit_is_served(http_server, base_url):
    document = json.dumps({"name": "청크", "description": "x" * 900}).encode()
    piece = 100
    body = b"".join(b"%x\r\n%s\r\n" % (len(document[at:at + piece]), document[at:at + piece])
                    for at in range(0, len(document), piece)) + b"0\r\n\r\n"
    answer = await exchange(port_of(base_url), b"POST /api/departments HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                            b"Connection: close\r\nTransfer-Encoding: chunked\r\n\r\n" + body)
    status, _, created = read_answer(answer)
    assert status == 201 and created["department"]["name"] == "청크", created


async def test_a_declared_length_over_the_limit_gets_413_on_every_route(http_server, base_url):
    for path in ("/app/", "/ws", "/api/departments"):
        answer = await exchange(port_of(base_url), f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                                f"Content-Length: {10 * LIMIT}\r\n\r\n".encode() + b"x" * 100)
        status, _, body = read_answer(answer)
        assert (status, body["code"]) == (413, "too_large"), path


@pytest.mark.parametrize("extra, status", [(f"Content-Length: {10 * LIMIT}\r\n", 413), ("X-Big: " + "a" * 70_000 + "\r\n", 431)])
async def test_head_requests_get_the_same_answer_without_a_body(http_server, base_url, extra, status):
    """Found by the long fuzz run: a HEAD over a limit broke the answer (a body Tornado refuses to send)."""
    answer = await exchange(port_of(base_url), f"HEAD /health HTTP/1.1\r\nHost: 127.0.0.1\r\n{extra}\r\n".encode())
    head, _, rest = answer.partition(b"\r\n\r\n")
    assert head.startswith(f"HTTP/1.1 {status} ".encode()) and b"Content-Length: 88" in head and rest == b""


@pytest.fixture
def timed_server(app, io_loop):
    """A server with short timeouts: idle 1.5 s, headers and body 0.6 s."""
    sock, port = bind_unused_port()
    server = HttpServer(app, idle_timeout=1.5, body_timeout=0.6)
    server.add_socket(sock)
    yield port
    server.stop()
    io_loop.run_sync(server.close_all_connections, timeout=5)


async def closed_after(reader: asyncio.StreamReader, limit: float = 10.0) -> float:
    """Seconds until the server closes the connection (reads nothing else)."""
    start = time.monotonic()
    assert await asyncio.wait_for(reader.read(1), limit) == b""
    return time.monotonic() - start


async def test_an_idle_keep_alive_connection_is_closed_after_idle_timeout_not_before(timed_server):
    reader, writer = await asyncio.open_connection("127.0.0.1", timed_server)
    connection = KeepAliveConnection(reader, writer)
    assert (await connection.request("GET", "/health"))[0] == 200
    await asyncio.sleep(1.0)  # longer than body_timeout: quiet, not slow
    assert (await connection.request("GET", "/health"))[0] == 200
    assert 1.3 < await closed_after(reader) < 5
    connection.close()


async def test_headers_that_do_not_arrive_within_body_timeout_close_the_connection(timed_server):
    reader, writer = await asyncio.open_connection("127.0.0.1", timed_server)
    connection = KeepAliveConnection(reader, writer)
    assert (await connection.request("GET", "/health"))[0] == 200
    writer.write(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n")  # ... and the rest never comes
    assert await closed_after(reader) < 1.4  # well before idle_timeout
    connection.close()


async def test_a_new_connection_must_send_its_request_within_body_timeout(timed_server):
    reader, writer = await asyncio.open_connection("127.0.0.1", timed_server)
    assert await closed_after(reader) < 1.4
    writer.close()


async def test_a_body_that_does_not_arrive_within_body_timeout_closes_the_connection(timed_server):
    reader, writer = await asyncio.open_connection("127.0.0.1", timed_server)
    writer.write(b"POST /api/departments HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 100\r\n\r\n{")
    assert await closed_after(reader) < 1.4
    writer.close()


async def test_a_slow_request_within_body_timeout_is_served(timed_server):
    reader, writer = await asyncio.open_connection("127.0.0.1", timed_server)
    for part in (b"GET /health HTTP/1.1\r\n", b"Host: 127.0.0.1\r\n", b"\r\n"):
        writer.write(part)
        await asyncio.sleep(0.1)
    assert (await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)).startswith(b"HTTP/1.1 200")
    writer.close()


async def test_serve_takes_the_timeouts_from_calsync_yaml(tmp_path):
    config = tmp_path / "calsync.yaml"
    config.write_text("server:\n  idle_timeout: 30\n  body_timeout: 0.5\nstorage:\n  backend: memory\n")
    server = ServerProcess(config)
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port_of(server.url))
        writer.write(b"GET /health HTTP/1.1\r\n")
        assert await closed_after(reader) < 5
        writer.close()
    finally:
        server.stop()


def ws_handshake(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(f"GET /ws HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                 f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode())
    head = b""
    while b"\r\n\r\n" not in head:
        head += sock.recv(1)
    assert head.startswith(b"HTTP/1.1 101")
    return sock


def read_frames(sock: socket.socket) -> list[tuple[int, bytes]]:
    """Every frame until the server closes: (opcode, payload)."""
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    frames = []
    while data:
        opcode, length = data[0] & 0x0F, data[1] & 0x7F
        at = 2
        if length == 126:
            length, at = int.from_bytes(data[2:4], "big"), 4
        frames.append((opcode, data[at:at + length]))
        data = data[at + length:]
    return frames


def frame(payload: bytes, masked: bool) -> bytes:
    if not masked:
        return bytes((0x81, len(payload))) + payload
    mask = os.urandom(4)
    return bytes((0x81, 0x80 | len(payload))) + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


async def test_an_unmasked_client_frame_closes_the_websocket_with_1002(http_server, base_url):
    port = port_of(base_url)
    message = json.dumps({"event": "ping", "data": {}, "id": 1}).encode()

    def talk() -> list[tuple[int, bytes]]:
        sock = ws_handshake(port)
        sock.sendall(frame(message, masked=True) + frame(message, masked=False))
        return read_frames(sock)

    frames = await asyncio.get_running_loop().run_in_executor(None, talk)
    events = [json.loads(payload)["event"] for opcode, payload in frames if opcode == 0x1]
    assert events == ["connected", "pong"]  # the masked ping is answered, the unmasked one not
    assert frames[-1][0] == 0x8 and int.from_bytes(frames[-1][1][:2], "big") == 1002
