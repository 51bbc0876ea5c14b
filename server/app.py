"""The app factory: everything a request needs comes in through `make_app`.

No module-level state: tests build as many apps (each with its own storage and hub) as
they like.
"""
from __future__ import annotations

import tornado.web

from handlers import departments, events, status, ws
from handlers.base import NotFoundHandler
from server import __version__
from server.config import ServerConfig
from server.hub import Hub
from storage.base import Storage


def make_app(
    storage: Storage,
    hub: Hub,
    server: ServerConfig | None = None,
    backend_name: str = "",
    **settings: object,
) -> tornado.web.Application:
    server = server or ServerConfig()
    routes = status.routes + departments.routes + events.routes + ws.routes
    return tornado.web.Application(
        routes,
        default_handler_class=NotFoundHandler,
        storage=storage,
        hub=hub,
        backend_name=backend_name or type(storage).__name__,
        version=__version__,
        allowed_origins=server.allowed_origins,
        max_body_bytes=server.max_body_bytes,
        websocket_max_message_size=server.max_message_bytes,
        **settings,
    )
