"""`/ws`: the native WebSocket, one JSON object per text frame.

    {"event": "join_department", "data": {"department_id": "..."}, "id": 7}

The handler is thin: open registers with the broker, a message is parsed and dispatched to
one method per client event, close leaves every room. Errors become `error` frames in
one place (`reply_error`) and the connection stays open. Frames over
`server.max_message_bytes` are closed by Tornado with 1009.
"""
from __future__ import annotations

import logging
import time
import uuid
from dataclasses import dataclass
from typing import Any

import tornado.httputil
import tornado.ioloop
import tornado.websocket

from calsync.handlers.base import (
    ServerParts,
    answer_error,
    host_problem,
    log_exception,
    origin_allowed,
    query_token,
    request_summary,
)
from calsync.handlers.errors import (
    InvalidJson,
    InvalidMessage,
    LimitExceeded,
    RateLimited,
    ServerBusy,
    UnknownEvent,
    UpgradeRequired,
    error_for_status,
)
from calsync.handlers.schemas import auth_schema, join_schema, parse_json, room_schema, sync_request_schema
from calsync.handlers.transport import (
    SendBufferFull,
    answer_frame,
    limit_send_buffer,
    masked_frames_only,
    text_frame,
    write_frame,
)
from calsync.server.access import OPEN, Grant, bearer
from calsync.server.answers import Answer
from calsync.server.config import LimitsConfig
from calsync.server.hub import Push, encode_frame
from calsync.server.logs import printable
from calsync.server.ratelimit import TokenBucket
from calsync.storage.errors import CalsyncError, Forbidden, Unauthorized, ValidationFailed

log = logging.getLogger("calsync.ws")
MAX_ID_LENGTH = 64
UNAUTHENTICATED = 4401  # close code: no valid token in time, or it expired
TRY_AGAIN_LATER = 1013  # close code: the client did not read its pushes; reconnect and resume
POLICY_VIOLATION = 1008  # close code: over the message rate for too long
OVER_RATE_SECONDS = 5.0
#: What a connection without a valid token may send (contract 9.1).
BEFORE_AUTH = ("auth", "ping")


@dataclass
class Envelope:
    event: str | None = None
    data: Any = None
    id: Any = None

    @classmethod
    def parse(cls, message: str | bytes) -> "Envelope":
        """Read a frame; on a broken one, raise with what could be read kept for the reply."""
        if isinstance(message, bytes):
            raise EnvelopeError(cls(), InvalidMessage("텍스트 프레임만 지원합니다."))
        try:
            frame = parse_json(message)
        except ValueError:
            raise EnvelopeError(cls(), InvalidJson("메시지가 올바른 JSON이 아닙니다.")) from None
        if not isinstance(frame, dict):
            raise EnvelopeError(cls(), InvalidMessage("메시지는 JSON 객체여야 합니다."))
        event, data, message_id = frame.get("event"), frame.get("data", {}), frame.get("id")
        envelope = cls(event if isinstance(event, str) else None, data, message_id if _valid_id(message_id) else None)
        if message_id is not None and envelope.id is None:
            raise EnvelopeError(envelope, InvalidMessage("id는 64자 이하의 문자열이나 정수여야 합니다."))
        if not envelope.event:
            raise EnvelopeError(envelope, InvalidMessage("event 이름이 필요합니다."))
        if not isinstance(data, dict):
            raise EnvelopeError(envelope, InvalidMessage("data는 JSON 객체여야 합니다."))
        return envelope


class EnvelopeError(Exception):
    def __init__(self, envelope: Envelope, error: CalsyncError) -> None:
        super().__init__(error.message)
        self.envelope = envelope
        self.error = error


def handshake_problem(request: tornado.httputil.HTTPServerRequest) -> CalsyncError | None:
    """What Tornado would refuse with a bare text answer, found first so it gets our JSON."""
    headers = request.headers
    if request.method != "GET":
        return None  # answered 405 by `write_error`
    if headers.get("Upgrade", "").lower() != "websocket":
        return ValidationFailed("WebSocket 업그레이드 요청이 아닙니다. (Upgrade: websocket 필요)")
    if "upgrade" not in [part.strip().lower() for part in headers.get("Connection", "").split(",")]:
        return ValidationFailed("WebSocket 업그레이드 요청이 아닙니다. (Connection: Upgrade 필요)")
    if not headers.get("Sec-WebSocket-Key"):
        return ValidationFailed("Sec-WebSocket-Key 헤더가 필요합니다.")
    if headers.get("Sec-WebSocket-Version") not in ("7", "8", "13"):
        return UpgradeRequired("지원하지 않는 WebSocket 버전입니다. (Sec-WebSocket-Version: 13)")
    return None


def _valid_id(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    return isinstance(value, int) or (isinstance(value, str) and len(value) <= MAX_ID_LENGTH)


class SyncSocket(ServerParts, tornado.websocket.WebSocketHandler):
    """One client connection: a member of the broker's rooms, and its requests answered in order."""

    grant: Grant | None = OPEN  # None: auth is on and no valid token came yet
    _auth_timer: object = None
    _closed_with: int | None = None  # the close code the server sent, for the log
    # Set on an instance only once they change: fewer attributes on each of many connections.
    _over_since: float | None = None
    _refused_at = 0.0
    _pending = False  # counted in the context's pending_auth until it authenticates or closes

    def close(self, code: int | None = None, reason: str | None = None) -> None:
        if self._closed_with is None:
            self._closed_with = code
        super().close(code, reason)

    def prepare(self) -> None:
        """A full server and a token on the URL or in `Authorization` are checked before the
        upgrade: 503 `server_busy`, or 401 for a bad token. Without a token, the client may
        still send `auth`."""
        problem = handshake_problem(self.request) or host_problem(self, self.context.allowed_hosts)
        if problem is not None:
            self._refuse(problem)
            return
        origin = self.request.headers.get("Origin")
        if origin and not self.check_origin(origin):
            self._refuse(Forbidden())
            return
        if self.tokens is not None:
            self.grant = None
            token = query_token(self) or bearer(self.request.headers.get("Authorization"))
            if token is not None:
                try:
                    self.grant = self.tokens.verify(token)
                except Unauthorized as exc:
                    self._refuse(exc)
                    return
        if self.grant is None:  # it may still send `auth`: it counts against pending_auth
            if self.context.pending_auth >= self.limits.pending_auth:
                self._refuse(ServerBusy("인증을 기다리는 연결이 너무 많습니다. 토큰과 함께 다시 연결해 주세요."))
        elif self.broker.members() - self.context.pending_auth >= self.limits.max_connections:
            self._refuse(ServerBusy())

    def log_exception(self, typ: Any, value: Any, tb: Any) -> None:
        log_exception(self, typ, value, tb)

    def _request_summary(self) -> str:
        return request_summary(self)

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        """Anything but a handshake (`POST /ws`): the same JSON errors as every route."""
        self._refuse(error_for_status(status_code))

    def _refuse(self, error: CalsyncError) -> None:
        """Answer the handshake with the contract's JSON error instead of upgrading."""
        answer_error(self, error, "ws")

    @property
    def limits(self) -> LimitsConfig:
        return self.context.limits

    def check_origin(self, origin: str) -> bool:
        """Browsers from our own origin or a listed one; clients without Origin always pass."""
        return origin_allowed(origin, self.request.host, self.context.allowed_origins)

    def get_websocket_protocol(self) -> tornado.websocket.WebSocketProtocol | None:
        return masked_frames_only(super().get_websocket_protocol())

    def get_compression_options(self) -> None:
        """No permessage-deflate: `send` writes pushes framed once, uncompressed."""
        return None

    # -- the hub's view of a connection ---------------------------------------------------
    def send(self, push: Push, answer: bool = False) -> None:
        """Write a push (or, `answer`, a reply); its WebSocket frame is built once and shared
        by every member.

        Server frames are unmasked and we negotiate no compression, so the bytes on the
        wire are the same for every connection (`transport`). Replies the client asked for
        never count against `send_buffer_bytes`; pushes it does not read do.
        """
        connection = self.ws_connection
        if connection is None:
            raise tornado.websocket.WebSocketClosedError()
        if push.wire is None:
            text = push.text
            push.wire = text_frame(text if isinstance(text, bytes) else text.encode("utf-8"))
        try:
            write_frame(connection, push.wire, answer)
        except SendBufferFull:
            # It stopped reading: its unsent pushes may not grow without bound.
            self.close(TRY_AGAIN_LATER, "send buffer full: reconnect and resume")
            raise tornado.websocket.WebSocketClosedError() from None

    # -- heartbeats (server/heartbeat.py) ---------------------------------------------------
    def send_ping(self) -> None:
        try:
            self.ping()
        except tornado.websocket.WebSocketClosedError:
            pass

    def on_pong(self, data: bytes) -> None:
        self.heard_at = time.monotonic()

    @property
    def granted(self) -> Grant:
        """The grant of an authenticated connection (`on_message` lets no other through)."""
        if self.grant is None:
            raise Unauthorized()
        return self.grant

    @property
    def sub(self) -> str:
        """Who this connection is, for presence ("-" with auth off or before a token)."""
        return self.grant.sub if self.tokens is not None and self.grant is not None else "-"

    def hears(self, department_id: str) -> bool:
        return self.grant is not None and self.grant.can_read(department_id)

    # -- tokens ---------------------------------------------------------------------------
    def _expect_token(self, seconds: float) -> None:
        """Close with 4401 after `seconds`: the time to authenticate, or the token's life."""
        loop = tornado.ioloop.IOLoop.current()
        if self._auth_timer is not None:
            loop.remove_timeout(self._auth_timer)
        if seconds != float("inf"):
            reason = "authentication timeout" if self.grant is None else "token expired"
            self._auth_timer = loop.call_later(max(seconds, 0), self.close, UNAUTHENTICATED, reason)

    def _authenticated(self, grant: Grant) -> None:
        self._settle_pending()
        self.grant = grant
        self._expect_token(grant.expires_at - time.time())

    # -- life cycle -----------------------------------------------------------------------
    def open(self) -> None:
        self.client_id = str(uuid.uuid4())
        self.heard_at = time.monotonic()
        self._budget = TokenBucket(self.limits.messages_per_second, 2 * self.limits.messages_per_second)
        assert self.ws_connection is not None  # open() runs on an upgraded connection
        limit_send_buffer(self.ws_connection, self.limits.send_buffer_bytes)
        self._forget_handshake()
        if self.grant is None:
            self._pending = True
            self.context.pending_auth += 1
            self._expect_token(self.context.auth_timeout)
        else:
            self._authenticated(self.grant)
        self.broker.add(self)
        subject = printable(getattr(self.grant, "sub", "") or "-")
        log.info("ws open %s %s sub=%s", self.client_id, self.request.remote_ip, subject,
                 extra={"fields": {"ws": "open", "id": self.client_id, "client": self.request.remote_ip, "sub": subject}})
        self.reply("connected", {"message": "서버에 연결되었습니다.", "client_id": self.client_id})

    def _forget_handshake(self) -> None:
        """Let go of what only the handshake needed: the request's headers and arguments
        (a `?token=` among them). Ten thousand idle connections keep ~1.5 KiB less each."""
        request = self.request
        request.headers.clear()  # in place: Tornado's handshake coroutine keeps a reference to it
        request.arguments, request.query_arguments, request.body_arguments, request.files = {}, {}, {}, {}
        self.path_args, self.path_kwargs = [], {}
        self._headers.clear()  # the 101 answer's headers, sent already

    def _settle_pending(self) -> None:
        if self._pending:
            self._pending = False
            self.context.pending_auth -= 1

    def on_close(self) -> None:
        self._settle_pending()
        client_id = getattr(self, "client_id", "-")
        code = self._closed_with or self.close_code  # ours when we closed it, else the client's
        log.info("ws close %s code=%s", client_id, code, extra={"fields": {"ws": "close", "id": client_id, "code": code}})
        if self._auth_timer is not None:
            tornado.ioloop.IOLoop.current().remove_timeout(self._auth_timer)
        self.broker.remove(self)

    async def on_message(self, message: str | bytes) -> None:
        self.heard_at = time.monotonic()
        envelope = Envelope()
        try:
            self._within_rate()
            envelope = Envelope.parse(message)
            handler = self.EVENTS.get(envelope.event or "")
            if handler is None:
                raise UnknownEvent(f"알 수 없는 이벤트입니다: {envelope.event}")
            if self.grant is None and envelope.event not in BEFORE_AUTH:
                raise Unauthorized()
            await handler(self, envelope)
        except EnvelopeError as exc:
            self.reply_error(exc.error, exc.envelope)
        except CalsyncError as exc:
            self.reply_error(exc, envelope)
        except tornado.websocket.WebSocketClosedError:
            pass
        except Exception:
            log.exception("error handling %r", envelope.event)
            self.reply_error(CalsyncError(), envelope)

    def _within_rate(self) -> None:
        """`rate_limited` past the budget. A client still refused 5 s after it first was —
        refused at least once a second all along — is closed (1008)."""
        if self._budget.take():
            return
        now = time.monotonic()
        if self._over_since is None or now - self._refused_at > 1.0:
            self._over_since = now
        self._refused_at = now
        if now - self._over_since >= OVER_RATE_SECONDS:
            self.close(POLICY_VIOLATION, "message rate exceeded")
            raise tornado.websocket.WebSocketClosedError()
        raise RateLimited()

    def reply(self, event: str, data: Any, message_id: Any = None) -> None:
        """A direct answer, written the way pushes are, so the two never overtake each other."""
        self._write(encode_frame(event, data, message_id))

    def reply_answer(self, event: str, data: dict[str, Any], answer: Answer, message_id: Any = None) -> None:
        """A reply holding a sync answer: its encoded fields go in as they are, not re-encoded."""
        self._write(answer_frame(event, data, answer, message_id))

    def _write(self, text: str | bytes) -> None:
        try:
            self.send(Push(text), answer=True)
        except tornado.websocket.WebSocketClosedError:
            pass  # the client left; there is no one to answer

    def reply_error(self, error: CalsyncError, envelope: Envelope) -> None:
        self.context.metrics.error(error.code, "ws")
        data: dict[str, Any] = {"message": error.message, "code": error.code, "request": envelope.event}
        if error.errors:
            data["errors"] = error.errors
        self.reply("error", data, envelope.id)

    # -- client events --------------------------------------------------------------------
    async def handle_join_department(self, envelope: Envelope) -> None:
        """Join with no gap and no repeat (contract 8.6): pushes are held from the moment of
        joining, the reply says up to which seq the client is served, and only held pushes
        past that seq follow it."""
        fields = join_schema.parse(envelope.data)
        department_id, cursor = fields["department_id"], join_schema.cursor(fields)
        self.granted.require_read(department_id)
        rooms = self.broker.rooms_of(self)
        if department_id not in rooms and len(rooms) >= self.limits.rooms_per_connection:
            raise LimitExceeded(f"한 연결이 참여할 수 있는 부서 그룹은 {self.limits.rooms_per_connection}개까지입니다.")
        self.broker.join(department_id, self)
        try:
            data = {"department_id": department_id, "message": "부서 그룹에 참여했습니다."}
            if cursor is None:
                state = await self.answers.state(department_id)
                self.reply("joined_department", {**data, "seq": state.seq, "epoch": state.epoch}, envelope.id)
                seq = state.seq
            else:
                answer = await self.answers.since(department_id, cursor)
                self.reply_answer("joined_department", data, answer, envelope.id)
                seq = answer.seq
        except BaseException:
            self.broker.leave(department_id, self)
            raise
        self.broker.go_live(department_id, self, seq)

    async def handle_leave_department(self, envelope: Envelope) -> None:
        department_id = room_schema.parse(envelope.data)["department_id"]
        self.broker.leave(department_id, self)
        self.reply("left_department", {"department_id": department_id, "message": "부서 그룹에서 나갔습니다."}, envelope.id)

    async def handle_sync_request(self, envelope: Envelope) -> None:
        fields = sync_request_schema.parse(envelope.data)
        department_id, cursor = fields["department_id"], sync_request_schema.cursor(fields)
        self.granted.require_read(department_id)
        answer = await self.answers.since(department_id, cursor, sync_request_schema.page_limit(fields))
        self.reply_answer("sync_response", {"department_id": department_id}, answer, envelope.id)

    async def handle_presence_request(self, envelope: Envelope) -> None:
        """Who is in a department's room, over every process (contract 12.4)."""
        department_id = room_schema.parse(envelope.data)["department_id"]
        self.granted.require_read(department_id)
        self.reply("presence", await self.broker.presence(department_id), envelope.id)

    async def handle_auth(self, envelope: Envelope) -> None:
        token = auth_schema.parse(envelope.data)["token"]
        grant = OPEN if self.tokens is None else self.tokens.verify(token)
        if self.grant is not None and self.tokens is not None:
            # A fresh token for a live connection (before the old one expires): rooms it may
            # no longer read are left.
            for room in self.broker.rooms_of(self):
                if not grant.can_read(room):
                    self.broker.leave(room, self)
        self._authenticated(grant)
        self.reply("authenticated", {"sub": grant.sub, "role": grant.role}, envelope.id)

    async def handle_ping(self, envelope: Envelope) -> None:
        self.reply("pong", {}, envelope.id)

    EVENTS = {
        "join_department": handle_join_department,
        "leave_department": handle_leave_department,
        "sync_request": handle_sync_request,
        "presence_request": handle_presence_request,
        "ping": handle_ping,
        "auth": handle_auth,
    }


routes = [(r"/ws", SyncSocket)]
