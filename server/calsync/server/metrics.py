"""Prometheus metrics (contract 10), with prometheus-client, one registry per app.

What is counted where: requests when Tornado logs them (`request_done`), errors where they
become answers (REST `write_error`, WebSocket `reply_error`), pushes once per push by the
broker (`observe_fanout`: never per connection, so the push path stays as lean as without),
storage calls by a thin timing wrapper around the storage (`TimedStorage`). Connections and
rooms are read from the broker when scraped.
"""
from __future__ import annotations

import inspect
import time
from typing import Any

import tornado.web
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from calsync.server.hub import Broker
from calsync.storage.base import Storage

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
REQUEST_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
FANOUT_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)


#: Methods counted by name; any other a client sends (`curl -X FOO1`) is `other` (contract 13).
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH"})


class Metrics:
    def __init__(self, broker: Broker, routes: dict[type, str]) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self._routes = routes
        self.requests = Counter("calsync_http_requests", "REST requests answered, by route, method and status",
                                ["route", "method", "status"], registry=self.registry)
        self.latency = Histogram("calsync_http_request_duration_seconds", "Time to answer a REST request",
                                 ["route", "method"], buckets=REQUEST_BUCKETS, registry=self.registry)
        self.errors = Counter("calsync_errors", "Error answers by code, REST and WebSocket",
                              ["code", "transport"], registry=self.registry)
        self.pushes = Counter("calsync_pushes_sent", "Pushes handed to WebSocket connections (one per connection)",
                              registry=self.registry)
        self.fanout = Histogram("calsync_push_fanout_seconds", "Time to hand one change to every listener",
                                buckets=FANOUT_BUCKETS, registry=self.registry)
        self.storage = Histogram("calsync_storage_call_duration_seconds", "Storage calls by operation and backend",
                                 ["operation", "backend"], buckets=REQUEST_BUCKETS, registry=self.registry)
        Gauge("calsync_websocket_connections", "Open WebSocket connections",
              registry=self.registry).set_function(lambda: broker.members())
        Gauge("calsync_rooms", "Rooms with at least one member", registry=self.registry).set_function(broker.room_count)
        broker.observe_fanout(self.pushed)
        if broker.status() != "local":
            Gauge("calsync_broker_up", "1 while the shared broker (Redis) answers, 0 while it does not",
                  registry=self.registry).set_function(lambda: 1 if broker.status() == "up" else 0)
            fills = Counter("calsync_broker_fills", "Rooms filled from the feed: what no broker message brought",
                            registry=self.registry)
            broker.observe_fills(fills.inc)

    def pushed(self, deliveries: int, seconds: float) -> None:
        self.pushes.inc(deliveries)
        self.fanout.observe(seconds)

    def request_done(self, handler: tornado.web.RequestHandler) -> None:
        route = self._routes.get(type(handler), "unmatched")
        method = handler.request.method if handler.request.method in METHODS else "other"  # bounded labels
        self.requests.labels(route, method, str(handler.get_status())).inc()
        self.latency.labels(route, method).observe(handler.request.request_time())

    def error(self, code: str, transport: str) -> None:
        self.errors.labels(code, transport).inc()

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


class TimedStorage:
    """The storage, with every async call timed into `calsync_storage_call_duration_seconds`."""

    def __init__(self, storage: Storage, metrics: Metrics, backend: str) -> None:
        self._storage = storage
        self._histogram = metrics.storage
        self._backend = backend

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._storage, name)
        if not inspect.iscoroutinefunction(attribute):
            return attribute
        observe = self._histogram.labels(name, self._backend).observe

        async def timed(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return await attribute(*args, **kwargs)
            finally:
                observe(time.perf_counter() - started)

        setattr(self, name, timed)  # made once per operation
        return timed
