"""Running calsync as a service: SIGTERM with requests in flight, JSON logs, the section 11 keys."""
from __future__ import annotations

import asyncio
import json
import signal
import socket
import threading
import time
from urllib.parse import urlsplit

import tornado.websocket

from tests.process import MotoProcess, ServerProcess, http_json, run_cli, write_config


def start_request(url: str, path: str, body: bytes, sent: int) -> socket.socket:
    """A POST whose headers and first `sent` bytes of body are on the wire, the rest held back."""
    parts = urlsplit(url)
    sock = socket.create_connection((parts.hostname, parts.port), timeout=15)
    head = (f"POST {path} HTTP/1.1\r\nHost: {parts.netloc}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode()
    sock.sendall(head + body[:sent])
    return sock


def read_response(sock: socket.socket) -> tuple[int, dict]:
    data = b""
    while b"\r\n\r\n" not in data:
        data += sock.recv(65536)
    head, rest = data.split(b"\r\n\r\n", 1)
    length = int(next(line.split(b":")[1] for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")))
    while len(rest) < length:
        rest += sock.recv(65536)
    return int(head.split()[1]), json.loads(rest[:length])


def refused(url: str) -> bool:
    parts = urlsplit(url)
    try:
        socket.create_connection((parts.hostname, parts.port), timeout=2).close()
    except ConnectionRefusedError:
        return True
    return False


async def test_sigterm_lets_a_request_in_flight_finish_then_closes_websockets(tmp_path):
    config = write_config(tmp_path, "server:\n  shutdown_grace: 10\nstorage:\n  backend: sqlite\n")
    server = ServerProcess(config)
    try:
        _, body = http_json(server.url + "/api/departments", "POST", {"name": "개발팀"})
        department_id = body["department"]["id"]
        connection = await tornado.websocket.websocket_connect(server.ws_url)
        assert json.loads(await connection.read_message())["event"] == "connected"
        event = json.dumps({"event_date": "2024-03-01", "title": "마감 직전"}, ensure_ascii=False).encode()
        sock = start_request(server.url, f"/api/events/{department_id}", event, 10)
        await asyncio.sleep(0.5)  # the server has read the headers: the request is in flight

        server.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 5
        while not refused(server.url) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert refused(server.url)  # no new connections
        assert server.process.poll() is None  # still running for the request in flight

        sock.sendall(event[10:])
        status, answer = read_response(sock)
        assert status == 201 and answer["event"]["title"] == "마감 직전"
        assert await asyncio.wait_for(connection.read_message(), 10) is None
        assert connection.close_code == 1001
        assert await asyncio.get_running_loop().run_in_executor(None, server.wait_exit) == 0
    finally:
        server.kill()
    assert "Traceback" not in server.output

    restarted = ServerProcess(config)
    try:
        _, body = http_json(restarted.url + f"/api/events/{department_id}")
        assert [e["title"] for e in body["events"]] == ["마감 직전"]
    finally:
        assert restarted.stop() == 0


def test_sigterm_does_not_wait_past_the_grace_for_a_stuck_request(tmp_path):
    server = ServerProcess(write_config(tmp_path, "server:\n  shutdown_grace: 1\nstorage:\n  backend: memory\n"))
    try:
        sock = start_request(server.url, "/api/departments", b'{"name": "never finished"}', 5)
        time.sleep(0.3)
        started = time.monotonic()
        assert server.stop() == 0
        assert time.monotonic() - started < 8
        sock.close()
    finally:
        server.kill()
    assert "1 requests still in flight after 1 s" in server.output


def test_json_logs_are_one_object_per_line_without_tokens_or_bodies(tmp_path):
    config = write_config(tmp_path, "server:\n  log_format: json\nstorage:\n  backend: sqlite\n")
    server = ServerProcess(config)
    try:
        status, body = http_json(server.url + "/api/departments", "POST", {"name": "비밀 부서 이름"})
        assert status == 201
        http_json(server.url + "/api/departments?token=secret-looking-value")
    finally:
        assert server.stop() == 0
    records = [json.loads(line) for line in server.output.splitlines() if line.strip()]
    assert all({"time", "level", "logger", "message"} <= record.keys() for record in records)
    access = [r for r in records if r["logger"] == "calsync.access"]
    assert {(r["method"], r["path"], r["status"]) for r in access} >= {
        ("POST", "/api/departments", 201), ("GET", "/api/departments", 200)}
    assert all(isinstance(r["ms"], float) and r["client"] == "127.0.0.1" and r["sub"] == "-" for r in access)
    assert "비밀 부서 이름" not in server.output and "secret-looking-value" not in server.output


def test_websocket_lines_carry_the_close_code(tmp_path):
    server = ServerProcess(write_config(tmp_path, "server:\n  log_format: json\nstorage:\n  backend: memory\n"))

    async def visit() -> None:
        connection = await tornado.websocket.websocket_connect(server.ws_url)
        await connection.read_message()
        connection.close(1000, "bye")
        await asyncio.sleep(0.3)

    try:
        asyncio.run(visit())
    finally:
        assert server.stop() == 0
    records = [json.loads(line) for line in server.output.splitlines() if line.strip()]
    opened = [r for r in records if r.get("ws") == "open"]
    closed = [r for r in records if r.get("ws") == "close"]
    assert len(opened) == 1 and opened[0]["client"] == "127.0.0.1"
    assert [(r["id"], r["code"]) for r in closed] == [(opened[0]["id"], 1000)]


def test_sigterm_exits_in_time_while_dynamodb_does_not_answer(tmp_path):
    """Storage calls stuck in a driver (the endpoint stopped answering: SIGSTOP) do not hold
    the exit: SIGTERM ends the process within shutdown_grace plus a few seconds."""
    moto = MotoProcess()
    try:
        config = write_config(tmp_path, (
            "server:\n  shutdown_grace: 1\nstorage:\n  backend: dynamodb\n  dynamodb:\n"
            f"    endpoint_url: {moto.url}\n    timeout_seconds: 60\n    max_attempts: 5\n"))
        assert run_cli("create-tables", "--config", str(config)).returncode == 0
        server = ServerProcess(config)
        try:
            status, body = http_json(server.url + "/api/departments", "POST", {"name": "개발팀"})
            assert status == 201
            moto.pause()
            stuck = threading.Thread(target=lambda: http_json_quietly(server.url + f"/api/events/{body['department']['id']}",
                                                                      {"event_date": "2024-01-20", "title": "x"}),
                                     daemon=True)
            stuck.start()
            time.sleep(1.0)  # the create is now waiting on DynamoDB
            started = time.monotonic()
            server.process.send_signal(signal.SIGTERM)
            assert server.process.wait(30) == 0
            took = time.monotonic() - started
            assert took < 1 + 5 + 3 + 3, took  # grace + WebSocket close + storage close + margin
            assert "exiting without waiting" in server.output
        finally:
            server.kill()
    finally:
        moto.stop()


def http_json_quietly(url: str, body: dict) -> None:
    try:
        http_json(url, "POST", body)
    except OSError:
        pass  # the server went away mid-request: expected here
