"""Every answer leaves a keep-alive connection usable, or says `Connection: close` (issue 11).

Pooled clients (requests, aiohttp, browsers) send their next request on the same
connection; a server that drops it silently fails an unrelated later request. The client
here is a plain socket speaking HTTP/1.1, so nothing retries behind the test's back.
"""
from __future__ import annotations

import asyncio
import json

import pytest

from tests.client import api

pytestmark = [pytest.mark.usefixtures("http_server"), pytest.mark.parametrize("backend", ["memory", "sqlite"])]


class KeepAliveConnection:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, base_url: str) -> "KeepAliveConnection":
        port = int(base_url.rsplit(":", 1)[1].split("/")[0])
        return cls(*await asyncio.open_connection("127.0.0.1", port))

    async def request(self, method: str, path: str, body: bytes = b"", headers: dict | None = None,
                      ) -> tuple[int, dict[str, str], bytes]:
        headers = {"Content-Length": str(len(body)), **(headers or {})}
        lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1"] + [f"{k}: {v}" for k, v in headers.items()]
        self.writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("utf-8") + body)
        head = await asyncio.wait_for(self.reader.readuntil(b"\r\n\r\n"), 10)
        status_line, *header_lines = head.decode("latin-1").split("\r\n")[:-2]
        answer_headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in header_lines)}
        length = int(answer_headers.get("content-length", 0))
        return int(status_line.split()[1]), answer_headers, await self.reader.readexactly(length)

    def close(self) -> None:
        self.writer.close()


async def test_every_error_answer_keeps_the_connection_usable(http_server_client, base_url, server_config):
    _, created = await api(http_server_client, "POST", "/api/departments", {"name": "개발팀"})
    department = created["department"]
    _, created = await api(http_server_client, "POST", f"/api/events/{department['id']}",
                           {"event_date": "2024-01-20", "title": "회의"})
    event_path = f"/api/events/{created['event']['id']}"
    meeting = json.dumps({"event_date": "2024-01-20", "title": "회의"}).encode()
    cases = [
        ("GET", "/nope", b"", {}, 404),
        ("POST", "/nope", b'{"a": 1}', {}, 404),
        ("POST", f"/api/departments/{department['id']}/y", b'{"a": 1}', {}, 404),
        ("OPTIONS", "/nope", b"", {}, 404),
        ("PUT", "/api/events/nope", b'{"title": "x"}', {}, 404),
        ("DELETE", "/api/departments", b"", {}, 405),
        ("POST", "/api/departments", b"not json", {}, 400),
        ("POST", "/api/departments", b'{"name": ""}', {}, 400),
        ("GET", f"/api/events/{department['id']}?since=x", b"", {}, 400),
        ("PUT", event_path, b'{"title": "y"}', {"If-Match": '"99"'}, 412),
        ("POST", f"/api/events/{department['id']}", meeting, {"Idempotency-Key": "k"}, 201),
        ("POST", f"/api/events/{department['id']}", b'{"event_date": "2024-01-21", "title": "x"}',
         {"Idempotency-Key": "k"}, 422),
        ("GET", f"/api/events/{department['id']}", b"", {"If-None-Match": "*"}, 304),
        ("OPTIONS", "/api/departments", b"", {"Origin": "https://elsewhere.example"}, 403),
        # announced too large: answered before the body is sent, as a client waiting on
        # `Expect: 100-continue` would see it
        ("POST", "/api/departments", b"", {"Content-Length": str(server_config.max_body_bytes + 1)}, 413),
    ]
    for method, path, body, headers, expected in cases:
        connection = await KeepAliveConnection.open(base_url)
        try:
            status, answer_headers, answer = await connection.request(method, path, body, headers)
            assert status == expected, (method, path, answer)
            if status != 304:
                assert answer_headers["content-type"].startswith("application/json"), (method, path)
            if answer_headers.get("connection", "").lower() == "close":
                assert status == 413, (method, path)  # only where the body could not be read
                continue
            status, _, answer = await connection.request("GET", "/health")
            assert (status, json.loads(answer)) == (200, {"success": True, "status": "ok"}), (method, path)
        finally:
            connection.close()
