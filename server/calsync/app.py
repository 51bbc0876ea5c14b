"""The app factory: everything a request needs comes in through `make_app`.

No module-level state: tests build as many apps (each with its own storage and broker) as
they like.
"""
from __future__ import annotations

import tornado.web

from calsync.handlers import departments, events, metrics, openapi, status, webapp, ws
from calsync.handlers import ics as ics_feed
from calsync.handlers.base import NotFoundHandler
from calsync.server.access import Tokens
from calsync.server.answers import SyncAnswers
from calsync.server.config import IcsConfig, LimitsConfig, ServerConfig, SyncConfig
from calsync.server.hub import Broker
from calsync.server.inflight import InFlight
from calsync.server.metrics import Metrics, TimedStorage
from calsync.server.requestlog import log_request
from calsync.server.version import __version__
from calsync.storage.base import Storage


def make_app(
    storage: Storage,
    broker: Broker,
    server: ServerConfig | None = None,
    backend_name: str = "",
    sync: SyncConfig | None = None,
    tokens: Tokens | None = None,
    auth_timeout: float = 10.0,
    limits: LimitsConfig | None = None,
    ics: IcsConfig | None = None,
    **settings: object,
) -> tornado.web.Application:
    server = server or ServerConfig()
    sync = sync or SyncConfig()
    routes = (status.routes + departments.routes + ics_feed.routes + events.routes + openapi.routes + metrics.routes
              + webapp.routes + ws.routes)
    backend_name = backend_name or type(storage).__name__
    measured = Metrics(broker, {route[1]: route_label(route[0]) for route in routes})
    storage = TimedStorage(storage, measured, backend_name)  # type: ignore[assignment]  # every call timed

    def log_function(handler: tornado.web.RequestHandler) -> None:
        measured.request_done(handler)
        log_request(handler)

    return tornado.web.Application(
        routes,
        default_handler_class=NotFoundHandler,
        metrics=measured,
        storage=storage,
        broker=broker,
        answers=SyncAnswers(storage),
        in_flight=InFlight(),
        idempotency_seconds=sync.idempotency_seconds,
        tokens=tokens,
        auth_timeout=auth_timeout,
        limits=limits or LimitsConfig(),
        backend_name=backend_name,
        version=__version__,
        allowed_origins=server.allowed_origins,
        timezone=server.timezone,
        ics_default_minutes=(ics or IcsConfig()).default_minutes,
        max_body_bytes=server.max_body_bytes,
        websocket_max_message_size=server.max_message_bytes,
        log_function=log_function,
        **settings,
    )


def route_label(pattern: str) -> str:
    """A route's pattern as people write it: `/api/events/{id}`."""
    return pattern.replace("([^/]+)", "{id}").replace("\\.", ".")
