"""One log line per request (contract 9.4): method, path, status, time, client, token subject.

The path is logged without its query string, so a `?token=` never reaches a log; nor do
headers or bodies.
"""
from __future__ import annotations

import logging

import tornado.web

from calsync.server.logs import printable

log = logging.getLogger("calsync.access")


def log_request(handler: tornado.web.RequestHandler) -> None:
    request = handler.request
    status = handler.get_status()
    grant = getattr(handler, "grant", None)
    subject = printable(getattr(grant, "sub", "") or "-")
    level = logging.INFO if status < 500 else logging.ERROR
    ms = round(1000.0 * request.request_time(), 1)
    fields = {"method": request.method, "path": request.path, "status": status, "ms": ms,
              "client": request.remote_ip, "sub": subject}
    log.log(level, "%s %s %d %.1fms %s sub=%s", request.method, request.path, status, ms, request.remote_ip,
            subject, extra={"fields": fields})
