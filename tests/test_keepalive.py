"""Every answer leaves a keep-alive connection usable, or says `Connection: close` (issue 11).

Pooled clients (requests, aiohttp, browsers) send their next request on the same
connection; a server that drops it silently fails an unrelated later request. The client
here is a plain socket speaking HTTP/1.1, so nothing retries behind the test's back.
"""
from __future__ import annotations

import json

import pytest

from tests.client import api
from tests.rawhttp import KeepAliveConnection

pytestmark = [pytest.mark.usefixtures("http_server"), pytest.mark.parametrize("backend", ["memory", "sqlite"])]


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
