"""`/app/`: the web calendar's static files (contract 10), served from the `calsync.web`
package, with a policy that lets the page talk only to this server."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import tornado.web

import calsync.web
from calsync.handlers.base import ApiHandler, answer_error, log_exception, request_summary
from calsync.handlers.errors import error_for_status

WEB_FOLDER = Path(calsync.web.__file__).resolve().parent
POLICY = ("default-src 'self'; connect-src 'self'; img-src 'self' data:; style-src 'self'; "
          "script-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'")


class WebAppHandler(tornado.web.StaticFileHandler):
    def log_exception(self, typ: Any, value: Any, tb: Any) -> None:
        log_exception(self, typ, value, tb)

    def _request_summary(self) -> str:
        return request_summary(self)

    def set_extra_headers(self, path: str) -> None:
        self.set_header("Content-Security-Policy", POLICY)
        self.set_header("X-Content-Type-Options", "nosniff")
        self.set_header("Cache-Control", "no-cache")  # revalidated with the ETag each time

    @classmethod
    def get_absolute_path(cls, root: str, path: str) -> str:
        if "\x00" in path or path.endswith(".py") or "__pycache__" in path:
            return str(Path(root) / "not-served")  # no file has a NUL; the package's own files are no pages
        return super().get_absolute_path(root, path)

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        answer_error(self, error_for_status(status_code))


class FaviconHandler(WebAppHandler):
    """`/favicon.ico`, which browsers ask every server for: the web calendar's icon (its own
    class, so metrics count it under its own route)."""


class AppRedirect(ApiHandler):
    """`/app` → `/app/`; any other method gets the usual JSON 405."""

    open_access = True

    def get(self) -> None:
        self.clear_header("Content-Type")  # an empty redirect, not a JSON answer
        self.redirect("/app/")


routes: list[tuple[str, Any] | tuple[str, Any, dict[str, Any]]] = [
    (r"/app", AppRedirect),
    (r"/app/(.*)", WebAppHandler, {"path": str(WEB_FOLDER), "default_filename": "index.html"}),
    (r"/(favicon\.ico)", FaviconHandler, {"path": str(WEB_FOLDER)}),
]
