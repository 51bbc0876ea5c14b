"""`GET /metrics`: Prometheus text format (contract 10); open like `/health`, so a scraper
needs no token (restrict it at the proxy if the counts are not for everyone)."""
from __future__ import annotations

from calsync.handlers.base import ApiHandler
from calsync.server.metrics import CONTENT_TYPE


class MetricsHandler(ApiHandler):
    open_access = True

    def get(self) -> None:
        self.set_header("Content-Type", CONTENT_TYPE)
        self.finish(self.context.metrics.exposition())


routes = [(r"/metrics", MetricsHandler)]
