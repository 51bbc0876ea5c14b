"""Guards for the WebSocket fast path (`calsync.handlers.transport`), which reaches below
Tornado's public API: if a Tornado release changes what it relies on, these fail.

- Frames: ours must be byte for byte what Tornado's own `write_message` puts on the wire, at
  every length boundary of RFC 6455 (0, 125, 126, 65,535, 65,536 bytes).
- Attributes: the connection's `stream`, `IOStream.writing()`, `IOStream.socket`,
  `max_write_buffer_size` and `StreamBufferFullError` exist and mean what we use them for.
- TLS: the whole server over `wss://`, where the fast path must fall back to IOStream.
"""
from __future__ import annotations

import asyncio
import datetime
import inspect
import json
import socket
import ssl
from pathlib import Path

import pytest
import tornado.httpclient
import tornado.httpserver
import tornado.iostream
import tornado.netutil
import tornado.web
import tornado.websocket
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from calsync.app import make_app
from calsync.handlers.connections import HttpServer
from calsync.handlers.transport import MaskedFramesOnly, text_frame, write_frame
from calsync.server.hub import Hub
from calsync.storage.memory import MemoryStorage
from tests.client import SyncClient, api

SIZES = [0, 1, 125, 126, 127, 65_535, 65_536, 70_000]


class EchoBothWays(tornado.websocket.WebSocketHandler):
    """On "<n>": n bytes sent by Tornado's `write_message`, then the same by our fast path."""

    def get_compression_options(self) -> None:
        return None

    def on_message(self, message: str | bytes) -> None:
        payload = b"x" * int(message)
        self.write_message(payload.decode())
        assert self.ws_connection is not None
        write_frame(self.ws_connection, text_frame(payload))


def read_exactly(sock: socket.socket, count: int) -> bytes:
    data = b""
    while len(data) < count:
        chunk = sock.recv(count - len(data))
        assert chunk, "connection closed"
        data += chunk
    return data


def read_frame(sock: socket.socket) -> bytes:
    """One whole server frame, header included, as it came off the wire."""
    head = read_exactly(sock, 2)
    length = head[1] & 0x7F
    extra = b""
    if length == 126:
        extra = read_exactly(sock, 2)
        length = int.from_bytes(extra, "big")
    elif length == 127:
        extra = read_exactly(sock, 8)
        length = int.from_bytes(extra, "big")
    return head + extra + read_exactly(sock, length)


def masked_text(text: bytes) -> bytes:
    """A client frame (masked, as RFC 6455 requires of clients); short texts only."""
    mask = b"\x01\x02\x03\x04"
    return bytes((0x81, 0x80 | len(text))) + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(text))


async def test_our_frames_are_tornados_frames_byte_for_byte():
    sockets = tornado.netutil.bind_sockets(0, "127.0.0.1")
    port = sockets[0].getsockname()[1]
    server = tornado.httpserver.HTTPServer(tornado.web.Application([(r"/", EchoBothWays)]))
    server.add_sockets(sockets)
    loop = asyncio.get_running_loop()

    def client() -> list[tuple[bytes, bytes]]:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.sendall(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                         b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
            answer = b""
            while b"\r\n\r\n" not in answer:
                answer += sock.recv(1)
            assert answer.startswith(b"HTTP/1.1 101")
            pairs = []
            for size in SIZES:
                sock.sendall(masked_text(str(size).encode()))
                pairs.append((read_frame(sock), read_frame(sock)))
            return pairs

    try:
        pairs = await loop.run_in_executor(None, client)
    finally:
        server.stop()
    for size, (tornados, ours) in zip(SIZES, pairs, strict=True):
        assert ours == tornados, f"frame of {size} bytes differs from Tornado's"
        assert len(ours) - size == (2 if size < 126 else 4 if size < 65_536 else 10)


async def test_the_attributes_the_fast_path_uses_exist(http_server_client, connect, hub):
    client = await connect()
    try:
        (member,) = hub.connections()
        connection = member.ws_connection
        assert isinstance(connection, tornado.websocket.WebSocketProtocol13)
        stream = connection.stream
        assert type(stream) is tornado.iostream.IOStream
        assert callable(stream.writing) and stream.writing() is False
        assert isinstance(stream.socket, socket.socket)
        assert stream.max_write_buffer_size == member.context.limits.send_buffer_bytes
        assert issubclass(tornado.iostream.StreamBufferFullError, Exception)
        assert connection.is_closing() is False
        # MaskedFramesOnly: the frame reader it wraps, and what it closes with.
        assert isinstance(connection, MaskedFramesOnly)
        for name in ("_receive_frame", "_read_bytes"):
            assert inspect.iscoroutinefunction(getattr(tornado.websocket.WebSocketProtocol13, name))
        assert callable(connection._abort) and connection.params.max_message_size > 0
        # HttpServer's sweep: the bytes of a request not yet parsed.
        assert stream._read_buffer_size == 0
    finally:
        client.close()


@pytest.fixture(params=["memory"])
def backend(request):
    """Attributes are checked on one backend: the transport does not depend on storage."""
    return request.param


def self_signed(folder: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.timezone.utc)
    certificate = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
                   .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
                   .not_valid_after(now + datetime.timedelta(days=1))
                   .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
                   .sign(key, hashes.SHA256()))
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


async def test_pushes_and_answers_over_tls(tmp_path):
    """wss:// end to end: the stream is an SSLIOStream, so every frame takes IOStream's path."""
    cert, key = self_signed(tmp_path)
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_context.load_cert_chain(cert, key)
    client_context = ssl.create_default_context(cafile=str(cert))
    storage = MemoryStorage()
    await storage.open()
    sockets = tornado.netutil.bind_sockets(0, "127.0.0.1")
    port = sockets[0].getsockname()[1]
    server = HttpServer(make_app(storage, Hub()), ssl_options=server_context)
    server.add_sockets(sockets)
    http = tornado.httpclient.AsyncHTTPClient(force_instance=True, defaults={"ssl_options": client_context})

    class Base:
        @staticmethod
        def fetch(path, **kwargs):
            return http.fetch(f"https://localhost:{port}{path}", **kwargs)

    client = None
    try:
        status, body = await api(Base, "POST", "/api/departments", {"name": "보안팀"})
        assert status == 201
        department = body["department"]["id"]
        client = await SyncClient.connect(f"wss://localhost:{port}/ws", ssl_options=client_context)
        await client.join(department)
        big = "가" * 20_000  # 60,000 bytes of UTF-8: a frame with a 16-bit length, several TLS records
        status, _ = await api(Base, "POST", f"/api/events/{department}",
                              {"event_date": "2026-12-02", "title": "점검", "description": big[:5000]})
        assert status == 201
        push = await client.receive()
        assert push["event"] == "event_created" and push["data"]["title"] == "점검"
        for _ in range(5):
            await api(Base, "POST", f"/api/events/{department}", {"event_date": "2026-12-03", "title": "t",
                                                                  "description": big[:5000]})
            assert (await client.receive())["event"] == "event_created"
        answer = await client.request("sync_request", {"department_id": department}, "full")
        assert answer["event"] == "sync_response" and answer["id"] == "full"
        assert len(answer["data"]["events"]) == 6 and answer["data"]["seq"] == 6
        assert len(json.dumps(answer, ensure_ascii=False).encode()) > 65_536  # a 64-bit length frame
    finally:
        if client is not None:
            client.close()
        http.close()
        server.stop()
        await storage.close()
