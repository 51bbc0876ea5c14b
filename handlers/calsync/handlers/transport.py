"""How WebSocket frames meet the socket: the push fast path and the frame check, in one place.

A push to a thousand members is framed once (`text_frame`) and written straight to each
idle socket, without a Future per member; a client's unmasked frame closes its connection
(`MaskedFramesOnly`). That reaches below Tornado's public API — the `WebSocketProtocol`'s
`stream`, `params`, `_receive_frame`, `_read_bytes` and `_abort`, `IOStream.writing()`,
`IOStream.socket` and `max_write_buffer_size` — so everything that does lives here, and
`tests/test_transport.py` fails if Tornado changes any of it (frames compared byte for byte with Tornado's own, the
attributes asserted, TLS end to end). setup.cfg pins tornado below its next major.
"""
from __future__ import annotations

import json
from asyncio import Future
from typing import Any

import tornado.iostream
import tornado.websocket

from calsync.server.answers import Answer


class SendBufferFull(Exception):
    """The client stopped reading: its unsent frames reached `send_buffer_bytes`."""


def text_frame(payload: bytes) -> bytes:
    """An unmasked, final WebSocket text frame (RFC 6455 section 5.2), as a server sends it."""
    length = len(payload)
    if length < 126:
        header = bytes((0x81, length))
    elif length < 1 << 16:
        header = bytes((0x81, 126)) + length.to_bytes(2, "big")
    else:
        header = bytes((0x81, 127)) + length.to_bytes(8, "big")
    return header + payload


def answer_frame(event: str, data: dict[str, Any], answer: Answer, message_id: Any = None) -> bytes:
    """`{"event", "data": {**data, <answer's fields>}, "id"?}`: the sync answer's encoded
    fields go in as they are, not decoded and encoded again."""
    parts = [b'{"event": ', json.dumps(event).encode(), b', "data": ', answer.json(**data)]
    if message_id is not None:
        parts += [b', "id": ', json.dumps(message_id, ensure_ascii=False).encode("utf-8")]
    parts.append(b"}")
    return b"".join(parts)


def limit_send_buffer(connection: tornado.websocket.WebSocketProtocol, limit: int) -> None:
    """Frames a client has not read may take at most `limit` bytes (then `SendBufferFull`)."""
    _stream(connection).max_write_buffer_size = limit


def write_frame(connection: tornado.websocket.WebSocketProtocol, wire: bytes, answer: bool = False) -> None:
    """Write one framed message, in order with everything written before it.

    An `answer` (a reply the client asked for, such as a sync answer of many megabytes) never
    counts against the send buffer's limit: the limit is raised by its size until it has been
    sent (contract 13), so only pushes the client does not read can fill it.

    Plain TCP with nothing queued: the bytes go to the socket at once. Otherwise (TLS, or a
    slow reader with bytes still queued) IOStream buffers them in order. Raises
    `WebSocketClosedError` when the connection is gone and `SendBufferFull` when the client
    stopped reading; the buffer limit is lifted then, to leave room for the close frame.
    """
    if connection.is_closing():
        raise tornado.websocket.WebSocketClosedError()
    stream = _stream(connection)
    sent = 0
    if type(stream) is tornado.iostream.IOStream and not stream.writing():
        try:
            sent = stream.socket.send(wire)
        except BlockingIOError:
            sent = 0
        except OSError:
            raise tornado.websocket.WebSocketClosedError() from None
    if sent < len(wire):
        rest = len(wire) - sent
        if answer and stream.max_write_buffer_size is not None:
            stream.max_write_buffer_size += rest
        try:
            written = stream.write(wire[sent:])
        except tornado.iostream.StreamClosedError:
            raise tornado.websocket.WebSocketClosedError() from None
        except tornado.iostream.StreamBufferFullError:
            stream.max_write_buffer_size = None
            raise SendBufferFull() from None
        if answer:
            written.add_done_callback(lambda done: _answer_sent(done, stream, rest))


def _answer_sent(done: "Future[None]", stream: tornado.iostream.IOStream, size: int) -> None:
    """An answer has been sent (or the connection is gone): the send buffer's limit is what
    it was before it."""
    if not done.cancelled():
        done.exception()  # a closed stream: nothing to report, the connection's close says it
    if stream.max_write_buffer_size is not None:
        stream.max_write_buffer_size -= size


def _stream(connection: tornado.websocket.WebSocketProtocol) -> tornado.iostream.IOStream:
    stream = connection.stream
    if stream is None:
        raise tornado.websocket.WebSocketClosedError()
    return stream


class MaskedFramesOnly(tornado.websocket.WebSocketProtocol13):
    """RFC 6455 section 5.1: a server closes the connection on a frame from the client that
    is not masked (1002). Tornado reads such frames as if they were masked; this checks the
    mask bit in each frame's first two bytes, the first read of `_receive_frame`."""

    _frame_start = False

    async def _receive_frame(self) -> None:
        self._frame_start = True
        await super()._receive_frame()

    async def _read_bytes(self, n: int) -> bytes:
        data = await super()._read_bytes(n)
        if self._frame_start:
            self._frame_start = False
            if not data[1] & 0x80:
                self.close(1002, "client frames must be masked")
                self._abort()
                raise tornado.iostream.StreamClosedError()
        return data


def masked_frames_only(protocol: tornado.websocket.WebSocketProtocol | None) -> MaskedFramesOnly | None:
    """The protocol Tornado chose for a handshake, refusing unmasked frames."""
    if not isinstance(protocol, tornado.websocket.WebSocketProtocol13):
        return None
    return MaskedFramesOnly(protocol.handler, False, protocol.params)
