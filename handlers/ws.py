"""`/ws`: the native WebSocket, one JSON object per text frame.

    {"event": "join_department", "data": {"department_id": "..."}, "id": 7}

The handler is thin: open registers with the broker, a message is parsed and dispatched to
one method per client event, close leaves every room. Errors become `error` frames in
one place (`reply_error`) and the connection stays open. Frames over
`server.max_message_bytes` are closed by Tornado with 1009.
"""
from __future__ import annotations

import json
import logging
import time
import uuid
from dataclasses import dataclass
from typing import Any

import tornado.iostream
import tornado.websocket

from handlers.base import ServerParts, origin_allowed
from handlers.schemas import join_schema, room_schema, sync_request_schema
from server.answers import Answer
from server.hub import Push, encode_frame
from storage.errors import CalsyncError, InvalidJson, InvalidMessage, UnknownEvent

log = logging.getLogger("calsync.ws")
MAX_ID_LENGTH = 64


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
            frame = json.loads(message)
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


def text_frame(payload: bytes) -> bytes:
    """An unmasked, final WebSocket text frame (RFC 6455 section 5.2)."""
    length = len(payload)
    if length < 126:
        header = bytes((0x81, length))
    elif length < 1 << 16:
        header = bytes((0x81, 126)) + length.to_bytes(2, "big")
    else:
        header = bytes((0x81, 127)) + length.to_bytes(8, "big")
    return header + payload


def _valid_id(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    return isinstance(value, int) or (isinstance(value, str) and len(value) <= MAX_ID_LENGTH)


class SyncSocket(ServerParts, tornado.websocket.WebSocketHandler):
    """One client connection: a member of the broker's rooms, and its requests answered in order."""

    def check_origin(self, origin: str) -> bool:
        """Browsers from our own origin or a listed one; clients without Origin always pass."""
        return origin_allowed(origin, self.request.host, self.settings["allowed_origins"])

    def get_compression_options(self) -> None:
        """No permessage-deflate: `send` writes pushes framed once, uncompressed."""
        return None

    # -- the hub's view of a connection ---------------------------------------------------
    def send(self, push: Push) -> None:
        """Write a push; the WebSocket frame is built once per push and shared by every member.

        Server frames are unmasked and we negotiate no compression, so the bytes on the
        wire are the same for every connection.
        """
        connection = self.ws_connection
        if connection is None or connection.is_closing():
            raise tornado.websocket.WebSocketClosedError()
        if push.wire is None:
            text = push.text
            push.wire = text_frame(text if isinstance(text, bytes) else text.encode("utf-8"))
        stream = connection.stream
        sent = 0
        if type(stream) is tornado.iostream.IOStream and not stream.writing():
            # Plain TCP with nothing queued: hand the bytes to the socket, no Future per member.
            try:
                sent = stream.socket.send(push.wire)
            except BlockingIOError:
                sent = 0
            except OSError:
                raise tornado.websocket.WebSocketClosedError() from None
        if sent < len(push.wire):
            stream.write(push.wire[sent:])  # a slow reader: IOStream buffers the rest in order

    # -- heartbeats (server/heartbeat.py) ---------------------------------------------------
    def send_ping(self) -> None:
        try:
            self.ping()
        except tornado.websocket.WebSocketClosedError:
            pass

    def on_pong(self, data: bytes) -> None:
        self.heard_at = time.monotonic()

    # -- life cycle -----------------------------------------------------------------------
    def open(self) -> None:
        self.client_id = str(uuid.uuid4())
        self.heard_at = time.monotonic()
        self.broker.add(self)
        self.reply("connected", {"message": "서버에 연결되었습니다.", "client_id": self.client_id})

    def on_close(self) -> None:
        self.broker.remove(self)

    async def on_message(self, message: str | bytes) -> None:
        self.heard_at = time.monotonic()
        envelope = Envelope()
        try:
            envelope = Envelope.parse(message)
            handler = self.EVENTS.get(envelope.event)
            if handler is None:
                raise UnknownEvent(f"알 수 없는 이벤트입니다: {envelope.event}")
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

    def reply(self, event: str, data: Any, message_id: Any = None) -> None:
        """A direct answer, written the way pushes are, so the two never overtake each other."""
        self._write(encode_frame(event, data, message_id))

    def reply_answer(self, event: str, data: dict[str, Any], answer: Answer, message_id: Any = None) -> None:
        """A reply holding a sync answer: its encoded fields go in as they are, not re-encoded."""
        head = json.dumps({"event": event, "data": data}, ensure_ascii=False)[:-2].encode("utf-8")
        tail = b"}}" if message_id is None else b'}, "id": ' + json.dumps(message_id, ensure_ascii=False).encode() + b"}"
        self._write(b"".join((head, b", ", answer.fields, tail)))

    def _write(self, text: str | bytes) -> None:
        try:
            self.send(Push(text))
        except tornado.websocket.WebSocketClosedError:
            pass  # the client left; there is no one to answer

    def reply_error(self, error: CalsyncError, envelope: Envelope) -> None:
        data = {"message": error.message, "code": error.code, "request": envelope.event}
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
        answer = await self.answers.since(department_id, cursor, sync_request_schema.page_limit(fields))
        self.reply_answer("sync_response", {"department_id": department_id}, answer, envelope.id)

    async def handle_ping(self, envelope: Envelope) -> None:
        self.reply("pong", {}, envelope.id)

    EVENTS = {
        "join_department": handle_join_department,
        "leave_department": handle_leave_department,
        "sync_request": handle_sync_request,
        "ping": handle_ping,
    }


routes = [(r"/ws", SyncSocket)]
