"""WebSocket heartbeats (contract 8.7): ping every connection, close the silent ones.

One timer for the whole server rather than one task per connection (Tornado's own
`websocket_ping_interval` runs a task per connection and caps the timeout at the interval,
while the contract's default waits 30 s on a 20 s interval).
"""
from __future__ import annotations

import time
from typing import Callable, Iterable, Protocol

from tornado.ioloop import IOLoop, PeriodicCallback


class Pingable(Protocol):
    #: When the last pong (or any frame) arrived, on `time.monotonic()`.
    heard_at: float

    def send_ping(self) -> None: ...

    def close(self, code: int | None = None, reason: str | None = None) -> None: ...


class Heartbeat:
    def __init__(self, connections: Callable[[], Iterable[Pingable]], interval: float, timeout: float) -> None:
        self._connections = connections
        self.interval = interval
        self.timeout = timeout
        self._timer = PeriodicCallback(self._ping_all, interval * 1000) if interval > 0 else None

    def start(self) -> None:
        if self._timer is not None:
            self._timer.start()

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.stop()

    def _ping_all(self) -> None:
        sent_at = time.monotonic()
        pinged = list(self._connections())
        for connection in pinged:
            connection.send_ping()
        if self.timeout > 0:
            IOLoop.current().call_later(self.timeout, self._close_silent, pinged, sent_at)

    @staticmethod
    def _close_silent(pinged: list[Pingable], sent_at: float) -> None:
        for connection in pinged:
            if connection.heard_at < sent_at:
                connection.close(1001, "ping timeout")
