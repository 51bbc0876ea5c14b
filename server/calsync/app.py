"""The app factory: everything a request needs comes in through `make_app`.

No module-level state: tests build as many apps (each with its own storage and broker) as
they like. Handlers find what is wired here in one typed `AppContext`. Serve an app with
`calsync.handlers.connections.HttpServer`, as `calsync serve` does: it enforces the header and
body limits and the timeouts that no handler can (Tornado's plain server would buffer bodies
up to 100 MB).
"""
from __future__ import annotations

from typing import Any, cast

import tornado.web

from calsync.handlers import departments, events, metrics, openapi, status, webapp, ws
from calsync.handlers import ics as ics_feed
from calsync.handlers.base import NotFoundHandler
from calsync.server.access import Tokens
from calsync.server.answers import SyncAnswers
from calsync.server.calendar import Calendar
from calsync.server.config import IcsConfig, LimitsConfig, ServerConfig, SyncConfig
from calsync.server.context import AppContext
from calsync.server.hub import Broker
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
    ready_timeout: float = 5.0,
) -> tornado.web.Application:
    server = server or ServerConfig()
    sync = sync or SyncConfig()
    routes: list[tuple[str, Any, dict[str, Any]] | tuple[str, Any]] = [
        *status.routes, *departments.routes, *ics_feed.routes, *events.routes, *openapi.routes, *metrics.routes,
        *webapp.routes, *ws.routes]
    backend_name = backend_name or type(storage).__name__
    measured = Metrics(broker, {route[1]: route_label(route[0]) for route in routes})
    timed = cast(Storage, TimedStorage(storage, measured, backend_name))  # the same calls, each timed
    context = AppContext(
        calendar=Calendar(timed, broker),
        broker=broker,
        answers=SyncAnswers(timed),
        metrics=measured,
        backend_name=backend_name,
        version=__version__,
        tokens=tokens,
        auth_timeout=auth_timeout,
        limits=limits or LimitsConfig(),
        idempotency_seconds=sync.idempotency_seconds,
        allowed_origins=server.allowed_origins,
        allowed_hosts=server.hosts(),
        max_body_bytes=server.max_body_bytes,
        timezone=server.timezone,
        ics_default_minutes=(ics or IcsConfig()).default_minutes,
        ready_timeout=ready_timeout,
    )

    def log_function(handler: tornado.web.RequestHandler) -> None:
        measured.request_done(handler)
        log_request(handler)

    return tornado.web.Application(
        routes,
        default_handler_class=NotFoundHandler,
        context=context,
        websocket_max_message_size=server.max_message_bytes,
        log_function=log_function,
    )


def route_label(pattern: str) -> str:
    """A route's pattern as people write it: `/api/events/{id}`."""
    return pattern.replace("([^/]+)", "{id}").replace("\\.", ".")
