"""`ApiHandler`: the base of every REST handler, and the one place errors become JSON.

Handlers raise the errors of `storage.errors` (or Tornado's `HTTPError`); `write_error`
alone turns them into `{"success": false, "message", "code", "errors"?}`. Nothing a client
sends can make the server answer with HTML or a traceback.
"""
from __future__ import annotations

import json
import logging
from typing import Any

import tornado.web

from calsync.handlers.errors import InvalidJson, error_for_status, status_of
from calsync.handlers.preconditions import idempotency_key
from calsync.handlers.schemas import parse_json
from calsync.server.access import OPEN, Grant, Tokens, bearer
from calsync.server.answers import Answer, SyncAnswers
from calsync.server.calendar import Calendar
from calsync.server.context import AppContext
from calsync.server.hub import Broker
from calsync.storage.errors import (
    CalsyncError,
    Forbidden,
    NotFound,
    Unauthorized,
    ValidationFailed,
    VersionConflict,
)
from calsync.storage.feed import Change, IdempotencyKey

log = logging.getLogger("calsync.http")
JSON_TYPE = "application/json; charset=UTF-8"

# What browsers from an allowed origin may send, and may read of an answer (contract 9.2).
CORS_REQUEST_HEADERS = "Authorization, Content-Type, If-Match, If-None-Match, Idempotency-Key"
CORS_RESPONSE_HEADERS = "ETag, Idempotent-Replayed"


def answer_error(handler: tornado.web.RequestHandler, error: CalsyncError, transport: str = "rest") -> None:
    """The one HTTP answer for an error: `{"success": false, "message", "code", ...}`, from
    every REST route, the WebSocket handshake and the web calendar's files alike."""
    context: AppContext | None = handler.settings.get("context")
    if context is not None:  # an Application not made by make_app counts nothing
        context.metrics.error(error.code, transport)
    if isinstance(error, Unauthorized):
        handler.set_header("WWW-Authenticate", "Bearer")
    handler.set_status(status_of(error))
    handler.set_header("Content-Type", JSON_TYPE)
    handler.finish(to_json(error_document(error)))


def error_document(error: CalsyncError) -> dict[str, Any]:
    """`{"success": false, "message", "code", "errors"?, "event"?}` (contract 2)."""
    body: dict[str, Any] = {"success": False, "message": error.message, "code": error.code}
    if error.errors:
        body["errors"] = error.errors
    if isinstance(error, VersionConflict):
        body["event"] = error.current.to_dict()
    return body


def query_token(handler: tornado.web.RequestHandler) -> str | None:
    """`?token=`, or "" (no valid token) when it is not UTF-8: checked in `prepare`, where
    Tornado's own 400 would drop a keep-alive connection."""
    try:
        return handler.get_query_argument("token", None)
    except tornado.web.HTTPError:
        return ""


def to_json(document: Any) -> str:
    """UTF-8 JSON with Korean left readable (no \\u escapes)."""
    return json.dumps(document, ensure_ascii=False)


WRITES = ("POST", "PUT", "DELETE", "PATCH")


def host_allowed(host: str, allowed: frozenset[str] | None) -> bool:
    """`Host` without its port is one the server answers to (contract 13: DNS rebinding)."""
    if allowed is None:
        return True
    name = host.lower()
    name = name[: name.index("]") + 1] if name.startswith("[") and "]" in name else name.rsplit(":", 1)[0]
    return name in allowed


def host_problem(handler: tornado.web.RequestHandler, allowed: frozenset[str] | None) -> CalsyncError | None:
    if host_allowed(handler.request.host, allowed):
        return None
    return ValidationFailed("이 서버가 응답하지 않는 Host입니다. (server.allowed_hosts)")


def origin_allowed(origin: str, host: str, allowed: tuple[str, ...]) -> bool:
    """Browsers may talk to us from our own origin or from one the operator listed."""
    if "*" in allowed or origin in allowed:
        return True
    return origin.split("://", 1)[-1] == host


class ServerParts:
    """What `make_app` wired (`AppContext`), for REST and WebSocket handlers alike."""

    settings: dict[str, Any]

    @property
    def context(self) -> AppContext:
        return self.settings["context"]

    @property
    def calendar(self) -> Calendar:
        """Reads, and writes that are published as they are stored."""
        return self.context.calendar

    @property
    def broker(self) -> Broker:
        return self.context.broker

    @property
    def answers(self) -> SyncAnswers:
        return self.context.answers

    @property
    def tokens(self) -> Tokens | None:
        """None when `auth.mode` is `none`."""
        return self.context.tokens


@tornado.web.stream_request_body
class ApiHandler(ServerParts, tornado.web.RequestHandler):
    """Bodies are streamed in: an oversized one is refused (413) by `HttpServer` as it arrives."""

    SUPPORTED_METHODS = ("GET", "POST", "PUT", "DELETE", "OPTIONS", "HEAD", "PATCH")
    #: Routes anyone may call with auth on (`/`, `/health`, `/ready`, unknown paths).
    open_access = False
    #: Routes that also take the token as `?token=` (the .ics feed: calendar apps send no headers).
    token_in_query = False
    grant: Grant = OPEN
    _counted = False  # counted in the app's `InFlight` until finished or dropped

    def set_default_headers(self) -> None:
        self.set_header("Content-Type", JSON_TYPE)
        origin = self.request.headers.get("Origin")
        if origin and origin_allowed(origin, self.request.host, self.context.allowed_origins):
            self.set_header("Access-Control-Allow-Origin", origin)
            self.set_header("Access-Control-Expose-Headers", CORS_RESPONSE_HEADERS)
            self.set_header("Vary", "Origin")

    def prepare(self) -> None:
        self.context.in_flight.begin()
        self._counted = True
        self._body = bytearray()  # at most `max_body_bytes`: `HttpServer` answers 413 beyond
        problem = host_problem(self, self.context.allowed_hosts)
        if problem is not None:
            self.answer_after_body(problem)
            return
        origin = self.request.headers.get("Origin")
        if (origin and self.request.method in WRITES
                and not origin_allowed(origin, self.request.host, self.context.allowed_origins)):
            self.answer_after_body(Forbidden())  # a page of another site may not write here
            return
        if self.tokens is not None and not self.open_access and self.request.method != "OPTIONS":
            token = bearer(self.request.headers.get("Authorization"))
            if token is None and self.token_in_query:
                token = query_token(self)
            try:
                self.grant = self.tokens.verify(token or "")
            except Unauthorized as exc:
                self.answer_after_body(exc)

    def decode_argument(self, value: bytes, name: str | None = None) -> str:
        """A path part that is not UTF-8 (`/api/events/%FF`) names nothing: it becomes text
        that matches no id, and the method answers 404 after the body is read. Tornado would
        refuse it before `prepare`, dropping a keep-alive connection."""
        if name is None:
            return value.decode("utf-8", "replace")
        return super().decode_argument(value, name)

    def answer_after_body(self, error: CalsyncError) -> None:
        """Answer `error` instead of the method, once the request has been read.

        Raising in `prepare` answers before the body is read, and Tornado then drops the
        keep-alive connection without saying so: a pooled client's next request on it fails.
        Only a body too large to read is answered early (413, by `HttpServer`, which closes).
        """
        def refuse(*args: str) -> None:
            raise error

        setattr(self, self.request.method.lower(), refuse)

    def on_finish(self) -> None:
        self._uncount()

    def on_connection_close(self) -> None:
        super().on_connection_close()
        self._uncount()

    def _uncount(self) -> None:
        if self._counted:
            self._counted = False
            self.context.in_flight.end()

    def data_received(self, chunk: bytes) -> None:
        self._body += chunk

    def options(self, *args: str) -> None:
        """CORS preflight: 204 for an allowed origin (see `set_default_headers`), 403 for any
        other; a request without `Origin` is no preflight and is simply answered."""
        origin = self.request.headers.get("Origin")
        if origin and not origin_allowed(origin, self.request.host, self.context.allowed_origins):
            raise Forbidden()
        self.set_header("Access-Control-Allow-Methods", "GET, POST, PUT, DELETE, OPTIONS")
        self.set_header("Access-Control-Allow-Headers", CORS_REQUEST_HEADERS)
        self.set_header("Access-Control-Max-Age", "600")
        self.set_status(204)
        self.finish()

    def json_body(self) -> dict[str, Any]:
        """The request body as a JSON object, or `InvalidJson`."""
        try:
            document = parse_json(bytes(self._body).decode("utf-8"))
        except ValueError:  # UnicodeDecodeError is one
            raise InvalidJson() from None
        if not isinstance(document, dict):
            raise InvalidJson()
        return document

    def idempotency(self, fields: dict[str, Any]) -> IdempotencyKey | None:
        """The request's `Idempotency-Key` for a create of `fields`, kept per path."""
        key = idempotency_key(self.request.headers.get("Idempotency-Key"))
        if key is None:
            return None
        scope = self.request.path if self.tokens is None else f"{self.grant.sub}\n{self.request.path}"
        return IdempotencyKey.for_request(scope, key, fields, self.context.idempotency_seconds)

    def reply(self, status_code: int = 200, /, **fields: Any) -> None:
        self.set_status(status_code)
        self.finish(to_json({"success": True, **fields}))

    def reply_answer(self, answer: Answer) -> None:
        """A sync answer (contract 8.5): its encoded fields go in as they are."""
        self.set_header("ETag", answer.etag)
        self.finish(answer.json(success=True))

    def reply_created(self, change: Change, name: str) -> None:
        """201 with the created record; a replayed create says so (contract 8.3)."""
        if change.replayed:
            self.set_header("Idempotent-Replayed", "true")
        self.reply(201, **{name: change.record.to_dict()})

    def head(self, *args: str) -> Any:
        """HEAD wherever GET works (uptime monitors use it): the GET answer's status and
        headers, and Tornado sends no body for a HEAD."""
        return self.get(*args)

    def allowed_methods(self) -> list[str]:
        """What this route answers, for the `Allow` header of a 405."""
        methods = [m for m in ("GET", "POST", "PUT", "DELETE", "PATCH")
                   if getattr(type(self), m.lower()) is not getattr(tornado.web.RequestHandler, m.lower())]
        return methods + (["HEAD"] if "GET" in methods else []) + ["OPTIONS"]

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        exc = kwargs.get("exc_info", (None, None, None))[1]
        if not isinstance(exc, CalsyncError):  # Tornado's HTTPError, or a bug (500)
            exc = error_for_status(status_code)
        if status_of(exc) == 405:
            self.set_header("Allow", ", ".join(self.allowed_methods()))
        answer_error(self, exc)

    def log_exception(self, typ: Any, value: Any, tb: Any) -> None:
        log_exception(self, typ, value, tb)

    def _request_summary(self) -> str:
        return request_summary(self)


def request_summary(handler: tornado.web.RequestHandler) -> str:
    """What Tornado's own log lines say of a request: method and path, never the query
    string (a `?token=`) nor the headers (contract 13)."""
    return f"{handler.request.method} {handler.request.path} ({handler.request.remote_ip})"


def log_exception(handler: tornado.web.RequestHandler, typ: Any, value: Any, tb: Any) -> None:
    """A domain error is an answer, not news; anything else is logged with its traceback and
    the request's method and path only (Tornado's own line would print the URI and headers)."""
    if isinstance(value, CalsyncError):
        log.debug("%s: %s", request_summary(handler), value.code)
    elif isinstance(value, tornado.web.HTTPError):
        if value.log_message:
            log.warning("%d %s: %s", value.status_code, request_summary(handler), value.log_message % value.args)
    else:
        log.error("Uncaught exception %s", request_summary(handler), exc_info=(typ, value, tb))


class NotFoundHandler(ApiHandler):
    """Every path no route matches: a JSON 404, whatever the method (and whoever asks)."""

    open_access = True

    def prepare(self) -> None:
        super().prepare()
        self.answer_after_body(NotFound())
