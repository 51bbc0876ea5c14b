"""Transport errors, and the one table that gives every error its HTTP status.

Storage and the server core raise domain errors (`calsync.storage.errors`) that say what
went wrong, not how to answer; errors only HTTP or the WebSocket can meet are defined
here. `status_of` is the one mapping from either kind to an HTTP status, and
`error_for_status` the way back, for a bare status Tornado raised.
"""
from __future__ import annotations

from calsync.storage.errors import (
    CalsyncError,
    Conflict,
    Forbidden,
    IdempotencyMismatch,
    NotFound,
    StorageUnavailable,
    Unauthorized,
    ValidationFailed,
    VersionConflict,
)


class InvalidJson(CalsyncError):
    code = "invalid_json"
    message = "요청 본문이 올바른 JSON 객체가 아닙니다."


class InvalidMessage(CalsyncError):
    code = "invalid_message"
    message = "메시지 형식이 올바르지 않습니다."


class UnknownEvent(CalsyncError):
    code = "unknown_event"
    message = "알 수 없는 이벤트입니다."


class MethodNotAllowed(CalsyncError):
    code = "method_not_allowed"
    message = "허용되지 않는 메서드입니다."


class TooLarge(CalsyncError):
    code = "too_large"
    message = "요청 본문이 너무 큽니다."


class HeadersTooLarge(TooLarge):
    """Headers over `MAX_HEADER_BYTES` (contract 13): answered by the connection, with 431."""
    message = "요청 헤더가 너무 큽니다."


class RateLimited(CalsyncError):
    code = "rate_limited"
    message = "요청이 너무 많습니다. 잠시 후 다시 시도해 주세요."


class LimitExceeded(CalsyncError):
    code = "limit_exceeded"
    message = "한도를 넘었습니다."


class ServerBusy(CalsyncError):
    code = "server_busy"
    message = "서버가 혼잡합니다. 잠시 후 다시 연결해 주세요."


class UpgradeRequired(ValidationFailed):
    """A WebSocket handshake in a version we do not speak (426, RFC 6455 section 4.4)."""


class BadRequest(ValidationFailed):
    """A status Tornado raised that has no error of its own (411, 414, ...): answered
    with that status and the contract's `validation_error` body."""

    def __init__(self, status: int) -> None:
        super().__init__("요청을 처리할 수 없습니다.")
        self.status = status


#: By class, most specific first: an error's status is its first class found here.
STATUS: dict[type[CalsyncError], int] = {
    UpgradeRequired: 426,
    InvalidJson: 400,
    InvalidMessage: 400,
    UnknownEvent: 400,
    LimitExceeded: 400,
    ValidationFailed: 400,
    Unauthorized: 401,
    Forbidden: 403,
    NotFound: 404,
    MethodNotAllowed: 405,
    Conflict: 409,
    VersionConflict: 412,
    HeadersTooLarge: 431,
    TooLarge: 413,
    IdempotencyMismatch: 422,
    RateLimited: 429,
    ServerBusy: 503,
    StorageUnavailable: 503,
}


def status_of(error: CalsyncError) -> int:
    if isinstance(error, BadRequest):
        return error.status
    for kind in type(error).__mro__:
        if kind in STATUS:
            return STATUS[kind]
    return 500


# Errors Tornado raises itself, by status, as contract errors.
HTTP_STATUS_ERRORS: dict[int, type[CalsyncError]] = {
    400: ValidationFailed,
    401: Unauthorized,
    403: Forbidden,
    404: NotFound,
    405: MethodNotAllowed,
    409: Conflict,
    413: TooLarge,
    503: StorageUnavailable,
}


def error_for_status(status: int) -> CalsyncError:
    """The contract error for a bare HTTP status (Tornado's `HTTPError`, a bug's 500): a
    status without an error of its own keeps its status, and says what kind it is."""
    if status in HTTP_STATUS_ERRORS:
        return HTTP_STATUS_ERRORS[status]()
    if 400 <= status < 500:
        return BadRequest(status)
    return CalsyncError()
