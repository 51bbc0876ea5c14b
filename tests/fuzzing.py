"""Hostile input for every REST route and the WebSocket, shared by the bounded run in the
suite (`test_fuzz.py`) and the long run (`python -m tests.fuzz_long`).

A real server runs on its own thread and loop (SQLite in a temp folder, auth on, so tokens
and their absence are exercised too). Requests go over one raw keep-alive socket, bytes as
generated; WebSocket frames over one connection. After every input the checks are the
contract's: never a 5xx, always the JSON error shape, the connection still open where the
contract keeps it open, and a rejected input leaves every department's feed where it was.
"""
from __future__ import annotations

import asyncio
import json
import socket
import string
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import tornado.httpserver
import tornado.netutil
import tornado.websocket
from hypothesis import strategies as st

from calsync.app import make_app
from calsync.handlers.connections import HttpServer
from calsync.server.access import Tokens
from calsync.server.config import LimitsConfig, ServerConfig
from calsync.server.hub import Hub
from calsync.storage.errors import CalsyncError
from calsync.storage.sqlite import SqliteOptions, SqliteStorage

SECRET = "fuzzing-secret-of-at-least-32-characters!"
MAX_BODY = 64 * 1024
MAX_MESSAGE = 16 * 1024


def _error_codes() -> set[str]:
    found, todo = set(), [CalsyncError]
    while todo:
        cls = todo.pop()
        found.add(cls.code)
        todo.extend(cls.__subclasses__())
    return found


ERROR_CODES = _error_codes()

# -- strategies ---------------------------------------------------------------------------
ODD_TEXT = st.sampled_from([
    "", " ", "\u200f\u202e역방향", "a\u0000b", "\ud800", "e\u0301\u0301\u0301", "🗓️👩‍👩‍👧", "\ufeff", "\\", "%00",
    "../../etc/passwd", "' OR 1=1 --", "<script>alert(1)</script>", "9" * 400, "-1", "1e309", "NaN", "null",
    "2024-02-30", "2024-13-01", "0000-00-00", "2024-1-1", "９９９９-０１-０１", "http://[", "https://[::1", "http://a]b",
])
TEXT = st.one_of(ODD_TEXT, st.text(max_size=60), st.text(min_size=190, max_size=260),
                 st.text(alphabet="가나다", min_size=990, max_size=1010), st.text(alphabet="x", min_size=4990, max_size=5010))
NUMBERS = st.one_of(st.integers(), st.integers(min_value=-(10**400), max_value=10**400), st.floats(allow_nan=True),
                    st.booleans(), st.none())
JSON_VALUES = st.recursive(st.one_of(NUMBERS, TEXT), lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.one_of(TEXT, st.sampled_from(
        ["name", "description", "event_date", "title", "time", "url", "department_id", "since", "epoch", "limit",
         "token", "id", "event", "data"])), inner, max_size=5)), max_leaves=20)
EVENT_FIELDS = st.fixed_dictionaries({}, optional={
    "event_date": st.one_of(st.dates().map(str), TEXT), "title": TEXT, "description": TEXT, "time": TEXT,
    "url": st.one_of(TEXT, st.just("https://example.com/" + "a" * 2040)), "name": TEXT,
    "department_id": TEXT, "extra": JSON_VALUES})


def deeply_nested(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


def encode(value: Any) -> bytes:
    try:
        return json.dumps(value, ensure_ascii=False, allow_nan=True).encode("utf-8", "surrogatepass")
    except (ValueError, OverflowError):
        return b"{}"


BODIES = st.one_of(
    st.binary(max_size=300),
    st.builds(encode, JSON_VALUES),
    st.builds(encode, EVENT_FIELDS),
    st.integers(min_value=100, max_value=5000).map(deeply_nested),
    st.sampled_from([b"", b"{", b"\xff\xfe{}", b'{"name": "\xed\xa0\x80"}', b'{"name": 1e999999}',
                     b'{"title": "' + b"x" * (MAX_BODY + 10) + b'"}']),
)
HEADER_TEXT = st.one_of(st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0xFF, exclude_characters="\x7f"),
                                max_size=300), ODD_TEXT.filter(lambda s: all(0x20 <= ord(c) <= 0xFF for c in s)))
SEGMENT = st.one_of(st.just("{department}"), st.just("{event}"), st.text(string.ascii_letters + string.digits + "-%._~",
                                                                       max_size=80), st.just("%FF%FE"), st.just("%00"),
                    st.just("a" * 5000), st.just("%EA%B0%80"))
ROUTES = ["/", "/health", "/ready", "/api/departments", "/api/departments/{id}", "/api/events/{id}", "/ws",
          "/api/openapi.json", "/nowhere/{id}", "/api/events/{id}/extra", "/api/departments/{id}/events.ics",
          "/metrics", "/app/", "/app/{id}", "/app", "/favicon.ico"]
QUERY_KEYS = ["since", "epoch", "limit", "from", "to", "token", "start_date", "end_date", "x"]
METHODS = ["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD"]


@dataclass
class Request:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    def render(self, host: str, ids: dict[str, str]) -> bytes:
        lines = [f"{self.method} {self.path} HTTP/1.1", f"Host: {host}", f"Content-Length: {len(self.body)}"]
        lines += [f"{name}: {value}" for name, value in self.headers.items()]
        head = "\r\n".join(lines)
        for name, value in ids.items():
            head = head.replace("{" + name + "}", value)
        return head.encode("latin-1") + b"\r\n\r\n" + self.body


@st.composite
def requests(draw: st.DrawFn) -> Request:
    route = draw(st.sampled_from(ROUTES))
    path = route.replace("{id}", draw(SEGMENT))
    query = draw(st.lists(st.tuples(st.sampled_from(QUERY_KEYS), st.one_of(
        st.text(string.ascii_letters + string.digits + "%-+.", max_size=40), st.sampled_from(["-1", "0", "1e3", "%FF", "99999999999999999999999"]))),
        max_size=4))
    if query:
        path += "?" + "&".join(f"{k}={v}" for k, v in query)
    headers = {}
    for name in draw(st.lists(st.sampled_from(["If-Match", "If-None-Match", "Idempotency-Key", "Authorization",
                                               "Content-Type", "Origin", "X-Junk"]), unique=True, max_size=4)):
        headers[name] = draw(st.one_of(HEADER_TEXT, st.sampled_from(['"1"', "*", 'W/"2", "3"', "Bearer {token}",
                                                                     "Bearer {reader}", "Bearer ", "Basic eA=="])))
    if draw(st.booleans()):
        headers["Authorization"] = draw(st.sampled_from(["Bearer {token}", "Bearer {reader}"]))
    return Request(draw(st.sampled_from(METHODS)), path, headers, draw(BODIES))


FRAMES = st.one_of(
    st.binary(max_size=200),
    st.text(max_size=200),
    st.builds(lambda v: encode(v).decode("utf-8", "surrogatepass"), JSON_VALUES),
    st.builds(lambda event, data, mid: encode({"event": event, "data": data, "id": mid}).decode("utf-8", "surrogatepass"),
              st.sampled_from(["join_department", "leave_department", "sync_request", "ping", "auth", "nope", ""]),
              st.one_of(JSON_VALUES, st.fixed_dictionaries({}, optional={
                  "department_id": st.one_of(TEXT, st.just("{department}")), "since": NUMBERS, "epoch": TEXT,
                  "limit": NUMBERS, "token": st.one_of(TEXT, st.just("{token}"))})),
              st.one_of(NUMBERS, TEXT)),
    st.integers(min_value=100, max_value=3000).map(lambda n: deeply_nested(n).decode()),
)


# -- the server under test ----------------------------------------------------------------
class FuzzServer:
    """calsync on a thread of its own, with a department and an event to aim at; auth on
    unless `auth` is False."""

    def __init__(self, auth: bool = True) -> None:
        self.folder = tempfile.TemporaryDirectory()
        self.tokens = Tokens(SECRET)
        self.auth = auth
        self.loop = asyncio.new_event_loop()
        self._started = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        self._started.wait(30)
        token = self.tokens.issue("admin", "*", 3600, "fuzz")
        reader = self.tokens.issue("read", "*", 3600, "fuzz-reader")
        self.client = RawHttp(self.host, token)
        _, body = self.client.json("POST", "/api/departments", {"name": "퍼즈팀"})
        department = body["department"]["id"]
        _, body = self.client.json("POST", f"/api/events/{department}", {"event_date": "2024-01-01", "title": "x"})
        self.ids = {"department": department, "event": body["event"]["id"], "token": token, "reader": reader}

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_until_complete(self._start())
        self._started.set()
        self.loop.run_forever()

    async def _start(self) -> None:
        self.storage = SqliteStorage(SqliteOptions(path=Path(self.folder.name) / "calsync.db"))
        await self.storage.open()
        app = make_app(self.storage, Hub(), ServerConfig(max_body_bytes=MAX_BODY, max_message_bytes=MAX_MESSAGE),
                       "sqlite", tokens=self.tokens if self.auth else None,
                       limits=LimitsConfig(messages_per_second=100_000))
        sockets = tornado.netutil.bind_sockets(0, "127.0.0.1")
        self.http = HttpServer(app)
        self.http.add_sockets(sockets)
        self.host = f"127.0.0.1:{sockets[0].getsockname()[1]}"
        self.url = f"http://{self.host}"

    def feeds(self) -> list[tuple[str, str, int]]:
        """Every department's name and feed position: what a rejected input must not move."""
        status, body = self.client.json("GET", "/api/departments")
        assert status == 200, body
        return sorted((d["id"], d["name"], d["seq"]) for d in body["departments"])

    def close(self) -> None:
        async def stop() -> None:
            self.http.stop()
            await self.storage.close()

        asyncio.run_coroutine_threadsafe(stop(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.folder.cleanup()


class RawHttp:
    """One keep-alive connection; reconnects only when the server said `Connection: close`."""

    def __init__(self, host: str, token: str) -> None:
        self.host = host
        self.token = token
        self.sock: socket.socket | None = None
        self.closed_by_server_without_notice = 0

    def _connect(self) -> socket.socket:
        if self.sock is None:
            name, port = self.host.rsplit(":", 1)
            self.sock = socket.create_connection((name, int(port)), timeout=30)
        return self.sock

    def send(self, raw: bytes, head_only: bool = False) -> tuple[int, dict[str, str], bytes]:
        sock = self._connect()
        sock.sendall(raw)
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(65536)
            if not chunk:
                raise ConnectionError("the server closed the connection without an answer")
            data += chunk
        head, rest = data.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        headers = {k.strip().lower(): v.strip() for k, v in (line.split(":", 1) for line in lines[1:])}
        length = 0 if head_only or status in (204, 304) else int(headers.get("content-length", "0"))
        while len(rest) < length:
            chunk = sock.recv(65536)
            if not chunk:
                raise ConnectionError("the server closed the connection mid-answer")
            rest += chunk
        if headers.get("connection", "").lower() == "close":
            sock.close()
            self.sock = None
        return status, headers, rest[:length]

    def json(self, method: str, path: str, document: Any = None) -> tuple[int, dict]:
        body = b"" if document is None else json.dumps(document).encode()
        request = Request(method, path, {"Authorization": f"Bearer {self.token}"}, body)
        status, _, raw = self.send(request.render(self.host, {}))
        return status, json.loads(raw)


def check_answer(request: Request, status: int, headers: dict[str, str], body: bytes) -> None:
    """The contract's promises for any answer to any request."""
    assert status < 500, (status, body[:300])
    if status in (204, 304) or request.method == "HEAD" or status == 101:
        return
    if request.path.startswith("/api/openapi.json") and status == 200:
        return  # the document, not an answer envelope (test_openapi.py checks it)
    if status < 400 and not headers.get("content-type", "").startswith("application/json"):
        # the feed, the metrics, the web calendar's files and redirects have types of their own
        assert request.path.split("?")[0].endswith((".ics", "/metrics", "/app", "/favicon.ico")) or "/app/" in request.path, \
            (status, headers)
        return
    assert headers.get("content-type", "").startswith("application/json"), (status, headers, body[:200])
    document = json.loads(body)
    assert isinstance(document, dict) and isinstance(document.get("success"), bool), str(document)[:300]
    if status >= 400:
        assert document["success"] is False and document["code"] in ERROR_CODES, document
        assert isinstance(document["message"], str) and document["message"], document


def fuzz_request(server: FuzzServer, request: Request) -> int:
    """Send one request and check the answer and the store; returns the status."""
    before = server.feeds()
    raw = request.render(server.host, server.ids)
    status, headers, body = server.client.send(raw, head_only=request.method == "HEAD")
    check_answer(request, status, headers, body)
    if status >= 400:
        assert server.feeds() == before, (request, status, body[:200])
    return status


class WsFuzzer:
    """One WebSocket, authenticated, fed frames; after each, a ping must still be answered."""

    def __init__(self, server: FuzzServer) -> None:
        self.server = server
        self.loop = asyncio.new_event_loop()
        self.connection = None

    def _url(self) -> str:
        return f"ws://{self.server.host}/ws?token={self.server.ids['token']}"

    async def _open(self) -> None:
        self.connection = await tornado.websocket.websocket_connect(self._url(), max_message_size=64 * MAX_MESSAGE)
        first = json.loads(await self.connection.read_message())
        assert first["event"] == "connected", first

    async def _send(self, frame: str | bytes) -> list[dict]:
        if self.connection is None:
            await self._open()
        for name, value in self.server.ids.items():
            if isinstance(frame, str):
                frame = frame.replace("{" + name + "}", value)
        size = len(frame.encode("utf-8", "surrogatepass") if isinstance(frame, str) else frame)
        if isinstance(frame, str):
            try:
                frame.encode("utf-8")
            except UnicodeEncodeError:
                frame = frame.encode("utf-8", "surrogatepass")  # invalid UTF-8: sent as a binary frame
        await self.connection.write_message(frame, binary=isinstance(frame, bytes))
        await self.connection.write_message(json.dumps({"event": "ping", "id": "fuzz-check"}))
        seen = []
        while True:
            message = await asyncio.wait_for(self.connection.read_message(), 10)
            if message is None:
                code = self.connection.close_code
                self.connection = None
                if size > MAX_MESSAGE and code == 1009:
                    return seen  # too big: closed as the contract says
                raise AssertionError(f"connection closed ({code}) after {frame!r:.200}")
            reply = json.loads(message)
            assert isinstance(reply, dict) and isinstance(reply.get("event"), str), reply
            if reply["event"] == "error":
                assert reply["data"]["code"] in ERROR_CODES, reply
            if reply.get("id") == "fuzz-check" and reply["event"] == "pong":
                return seen
            seen.append(reply)

    def send(self, frame: str | bytes) -> list[dict]:
        return self.loop.run_until_complete(self._send(frame))

    def close(self) -> None:
        if self.connection is not None:
            self.connection.close()
        self.loop.close()
