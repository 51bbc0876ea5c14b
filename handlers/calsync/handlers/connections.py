"""`HttpServer`: Tornado's HTTP server with the limits of contract 13 a request cannot reach.

Some answers must come before any handler exists (headers too large to route) or while a
body is still arriving (a chunked body over `max_body_bytes`), and some clients never
finish a request at all. Each request is therefore watched by a `GuardedRequest` between
the connection and the application:

- headers over `MAX_HEADER_BYTES`: 431, and a body over `max_body_bytes` (declared or
  chunked): 413, both as the contract's JSON error with `Connection: close`, for every route;
- a keep-alive connection with no request is closed after `idle_timeout`; once a request's
  first byte arrives (or the connection opens), its headers and body must arrive within
  `body_timeout`, or the connection is closed (no answer: there is no request to answer).

Tornado's own `idle_connection_timeout` is also its header timeout (one clock from the end
of the last answer to the end of the next headers), so it cannot tell a quiet keep-alive
connection from one dribbling a request. A sweep does, by whether bytes of the next request
wait in the stream's buffer: `IOStream._read_buffer_size`, which `tests/test_transport.py`
asserts (setup.cfg pins tornado below its next major).
"""
from __future__ import annotations

import http.client
import logging
import time
import weakref
from typing import Any, Awaitable, cast

import tornado.http1connection
import tornado.httpserver
import tornado.httputil
import tornado.ioloop
import tornado.web

from calsync.handlers.base import JSON_TYPE, error_document, to_json
from calsync.handlers.errors import HeadersTooLarge, TooLarge, status_of
from calsync.server.context import AppContext
from calsync.server.logs import printable
from calsync.storage.errors import CalsyncError

log = logging.getLogger("calsync.http")

#: Headers a request may carry (contract 13: over 64 KiB → 431).
MAX_HEADER_BYTES = 64 * 1024
#: What Tornado reads while looking for the end of the headers: between the two, headers
#: get the 431; beyond it a client is cut off unanswered (it is sending a megabyte of headers).
HEADER_READ_BYTES = 1024 * 1024
#: A declared or chunked body is counted here; Tornado's own limit would answer an empty 400.
UNBOUNDED = 1 << 62


class HttpServer(tornado.httpserver.HTTPServer):
    """`HttpServer(app, idle_timeout=, body_timeout=, **tornado_options)`: the timeouts as in
    `server:` of calsync.yaml; other options go to Tornado's HTTPServer (`ssl_options`, ...)."""

    def initialize(  # type: ignore[override]  # `body_timeout` is ours: it covers headers too
            self, request_callback: Any, idle_timeout: float = 75.0, body_timeout: float = 30.0, **kwargs: Any) -> None:
        # HTTPServer is a Configurable: the constructor's arguments arrive here.
        super().initialize(request_callback, max_header_size=HEADER_READ_BYTES, max_body_size=UNBOUNDED,
                           idle_connection_timeout=idle_timeout + body_timeout,  # the sweep closes first
                           body_timeout=body_timeout, **kwargs)
        context: AppContext = request_callback.settings["context"]
        self.context = context
        self.idle_timeout = idle_timeout
        self.body_timeout = body_timeout
        #: Requests whose headers have not all arrived, by their connection.
        self.waiting: dict[tornado.http1connection.HTTP1Connection, HeaderWait] = {}
        self._served: weakref.WeakSet[Any] = weakref.WeakSet()  # server connections past their first request
        interval = max(0.05, min(1.0, idle_timeout / 4, body_timeout / 4))
        self._sweep = tornado.ioloop.PeriodicCallback(self.sweep, interval * 1000)
        self._sweep.start()

    def start_request(self, server_conn: object, request_conn: tornado.httputil.HTTPConnection,
                      ) -> tornado.httputil.HTTPMessageDelegate:
        delegate = super().start_request(server_conn, request_conn)
        if not isinstance(request_conn, tornado.http1connection.HTTP1Connection):
            return delegate
        fresh = server_conn not in self._served
        self._served.add(server_conn)
        now = time.monotonic()
        self.waiting[request_conn] = HeaderWait(now, now if fresh else None)
        return GuardedRequest(self, request_conn, delegate)

    def sweep(self) -> None:
        """Close connections idle past `idle_timeout`, or whose request is not in within `body_timeout`."""
        now = time.monotonic()
        for conn, wait in list(self.waiting.items()):
            stream = conn.stream
            if stream is None or stream.closed():
                del self.waiting[conn]
                continue
            if wait.started is None and stream._read_buffer_size:
                wait.started = now  # the next request's first bytes are here
            if wait.started is not None:
                late = now - wait.started > self.body_timeout
            else:
                late = now - wait.since > self.idle_timeout
            if late:
                del self.waiting[conn]
                conn.close()

    def stop(self) -> None:
        self._sweep.stop()
        super().stop()

    def deadline(self, conn: tornado.http1connection.HTTP1Connection) -> float:
        """Seconds left for the body of the request whose headers just arrived."""
        wait = self.waiting.pop(conn, None)
        started = wait.started if wait is not None and wait.started is not None else time.monotonic()
        return max(0.0, self.body_timeout - (time.monotonic() - started))


class HeaderWait:
    """When a connection began waiting for a request, and when that request's bytes began."""
    __slots__ = ("since", "started")

    def __init__(self, since: float, started: float | None) -> None:
        self.since, self.started = since, started


class GuardedRequest(tornado.httputil.HTTPMessageDelegate):
    """Passes a request on to the application unless it is too large, answering that itself."""

    def __init__(self, server: HttpServer, conn: tornado.http1connection.HTTP1Connection,
                 delegate: tornado.httputil.HTTPMessageDelegate) -> None:
        self.server, self.conn, self.delegate = server, conn, delegate
        self.received = 0
        self.passed_on = False  # the application has the headers
        self.refused = False

    def headers_received(self, start_line: tornado.httputil.RequestStartLine | tornado.httputil.ResponseStartLine,
                         headers: tornado.httputil.HTTPHeaders) -> Awaitable[None] | None:
        self.conn.set_body_timeout(self.server.deadline(self.conn))
        start_line = cast(tornado.httputil.RequestStartLine, start_line)  # a server reads requests
        size = len(start_line.path) + sum(len(name) + len(value) + 4 for name, value in headers.get_all())
        if size > MAX_HEADER_BYTES:
            self.refuse(HeadersTooLarge(), start_line)
            return None
        length = headers.get("Content-Length", "")
        if length.isdigit() and int(length) > self.server.context.max_body_bytes:
            self.refuse(TooLarge(), start_line)
            return None
        self.start_line = start_line
        self.passed_on = True
        return self.delegate.headers_received(start_line, headers)

    def data_received(self, chunk: bytes) -> Awaitable[None] | None:
        if self.refused:
            return None
        self.received += len(chunk)
        if self.received > self.server.context.max_body_bytes:
            self.refuse(TooLarge(), self.start_line)
            return None
        return self.delegate.data_received(chunk)

    def finish(self) -> None:
        if not self.refused:
            self.delegate.finish()

    def on_connection_close(self) -> None:
        self.server.waiting.pop(self.conn, None)
        if not self.refused:
            self.delegate.on_connection_close()

    def refuse(self, error: CalsyncError, start_line: tornado.httputil.RequestStartLine) -> None:
        """Answer `error` and close: the rest of this request will not be read."""
        self.refused = True
        if self.passed_on:
            self.delegate.on_connection_close()  # its handler stops waiting for the body
        self.server.context.metrics.error(error.code, "rest")
        status = status_of(error)
        log.info("%d %s %s: %s", status, start_line.method, printable(start_line.path.split("?", 1)[0][:200]), error.code)
        body = to_json(error_document(error)).encode("utf-8")
        headers = tornado.httputil.HTTPHeaders({
            "Content-Type": JSON_TYPE, "Content-Length": str(len(body)),
            "Connection": "close"})
        answer = b"" if start_line.method == "HEAD" else body  # HEAD: the same headers, no body
        self.conn.write_headers(tornado.httputil.ResponseStartLine("HTTP/1.1", status, http.client.responses[status]),
                                headers, answer)
        self.conn.finish()
