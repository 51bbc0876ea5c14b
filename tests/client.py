"""Test clients that talk to a real server over real sockets: REST and WebSocket."""
from __future__ import annotations

import asyncio
import json
from typing import Any

import tornado.httpclient
import tornado.websocket

RECEIVE_TIMEOUT = 10.0

MEETING = {"event_date": "2024-01-20", "title": "팀 회의", "description": "주간 팀 회의", "time": "오후 2:00",
           "url": "https://example.com"}
DEPARTMENT_FIELDS = {"id", "name", "description", "created_at", "updated_at", "seq", "epoch"}
EVENT_FIELDS = {"id", "department_id", "event_date", "title", "description", "time", "url", "created_at",
                "last_modified", "version", "seq"}


async def make_department(client, name="개발팀", description="소프트웨어 개발") -> dict:
    status, body = await api(client, "POST", "/api/departments", {"name": name, "description": description})
    assert status == 201, body
    return body["department"]


async def make_event(client, department, **fields) -> dict:
    status, body = await api(client, "POST", f"/api/events/{department}", {**MEETING, **fields})
    assert status == 201, body
    return body["event"]


async def api(client: Any, method: str, path: str, body: Any = None, *, raw: bytes | None = None,
              headers: dict | None = None) -> tuple[int, dict]:
    """One REST call; returns `(status, JSON body)`. `raw` sends bytes as they are."""
    status, document, _ = await api_full(client, method, path, body, raw=raw, headers=headers)
    return status, document


async def api_full(client: Any, method: str, path: str, body: Any = None, *, raw: bytes | None = None,
                   headers: dict | None = None) -> tuple[int, dict | None, Any]:
    """One REST call; returns `(status, JSON body or None when there is none, headers)`."""
    if raw is None and body is not None:
        raw = json.dumps(body, ensure_ascii=False).encode("utf-8")
    if raw is None and method in ("POST", "PUT", "PATCH"):
        raw = b""
    response = await client.fetch(path, method=method, body=raw, headers=headers, raise_error=False,
                                  allow_nonstandard_methods=True)
    if response.code == 304:
        assert not response.body
        return response.code, None, response.headers
    assert response.headers["Content-Type"].startswith("application/json"), response.body[:200]
    return response.code, json.loads(response.body.decode("utf-8")), response.headers


class SyncClient:
    """A WebSocket client speaking calsync's JSON envelope."""

    def __init__(self, connection: tornado.websocket.WebSocketClientConnection) -> None:
        self.connection = connection
        self.client_id: str | None = None

    @classmethod
    async def connect(cls, url: str, **kwargs: Any) -> "SyncClient":
        request = tornado.httpclient.HTTPRequest(url, **kwargs)
        client = cls(await tornado.websocket.websocket_connect(request))
        connected = await client.receive()
        assert connected["event"] == "connected", connected
        client.client_id = connected["data"]["client_id"]
        return client

    async def send(self, event: str, data: Any = None, message_id: Any = None) -> None:
        frame: dict[str, Any] = {"event": event, "data": {} if data is None else data}
        if message_id is not None:
            frame["id"] = message_id
        await self.send_raw(json.dumps(frame, ensure_ascii=False))

    async def send_raw(self, text: str | bytes) -> None:
        await self.connection.write_message(text, binary=isinstance(text, bytes))

    async def receive(self, timeout: float = RECEIVE_TIMEOUT) -> dict:
        message = await asyncio.wait_for(self.connection.read_message(), timeout)
        assert message is not None, f"connection closed: {self.connection.close_code} {self.connection.close_reason}"
        return json.loads(message)

    async def request(self, event: str, data: Any = None, message_id: Any = None) -> dict:
        """Send a message and return the next frame (the direct reply when nothing else is pushed)."""
        await self.send(event, data, message_id)
        return await self.receive()

    async def join(self, department_id: str) -> None:
        reply = await self.request("join_department", {"department_id": department_id})
        assert reply["event"] == "joined_department", reply

    async def expect_nothing(self, wait: float = 0.2) -> None:
        """Nothing arrives within `wait` seconds (checked by a ping round-trip after the wait)."""
        await asyncio.sleep(wait)
        reply = await self.request("ping", {}, "nothing-check")
        assert reply == {"event": "pong", "data": {}, "id": "nothing-check"}, reply

    def close(self) -> None:
        self.connection.close()
