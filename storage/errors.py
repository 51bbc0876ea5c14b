"""Domain errors: raised anywhere, turned into responses in exactly one place per protocol.

Each error carries the HTTP status, the machine `code` and the Korean `message` of the
contract. `handlers/base.py` maps them to REST bodies, `handlers/ws.py` to `error` frames.
"""
from __future__ import annotations


class CalsyncError(Exception):
    status = 500
    code = "internal"
    message = "서버 내부 오류가 발생했습니다."

    def __init__(self, message: str | None = None, errors: dict | None = None) -> None:
        super().__init__(message or self.message)
        if message is not None:
            self.message = message
        self.errors = errors


class InvalidJson(CalsyncError):
    status = 400
    code = "invalid_json"
    message = "요청 본문이 올바른 JSON 객체가 아닙니다."


class InvalidMessage(CalsyncError):
    status = 400
    code = "invalid_message"
    message = "메시지 형식이 올바르지 않습니다."


class UnknownEvent(CalsyncError):
    status = 400
    code = "unknown_event"
    message = "알 수 없는 이벤트입니다."


class ValidationFailed(CalsyncError):
    status = 400
    code = "validation_error"
    message = "입력값이 올바르지 않습니다."


class Unauthorized(CalsyncError):
    status = 401
    code = "unauthorized"
    message = "인증이 필요합니다."


class Forbidden(CalsyncError):
    status = 403
    code = "forbidden"
    message = "권한이 없습니다."


class NotFound(CalsyncError):
    status = 404
    code = "not_found"
    message = "요청한 경로를 찾을 수 없습니다."


class DepartmentNotFound(NotFound):
    message = "부서를 찾을 수 없습니다."


class EventNotFound(NotFound):
    message = "이벤트를 찾을 수 없습니다."


class MethodNotAllowed(CalsyncError):
    status = 405
    code = "method_not_allowed"
    message = "허용되지 않는 메서드입니다."


class Conflict(CalsyncError):
    status = 409
    code = "conflict"
    message = "요청이 현재 상태와 충돌합니다."


class DuplicateDepartmentName(Conflict):
    message = "이미 존재하는 부서 이름입니다."


class TooLarge(CalsyncError):
    status = 413
    code = "too_large"
    message = "요청 본문이 너무 큽니다."


class RateLimited(CalsyncError):
    status = 429
    code = "rate_limited"
    message = "요청이 너무 많습니다. 잠시 후 다시 시도해 주세요."


class LimitExceeded(CalsyncError):
    status = 400
    code = "limit_exceeded"
    message = "한도를 넘었습니다."


class ServerBusy(CalsyncError):
    status = 503
    code = "server_busy"
    message = "서버가 혼잡합니다. 잠시 후 다시 연결해 주세요."


class StorageUnavailable(CalsyncError):
    """The backend did not answer (outage, throttling, timeout); the request may be retried."""

    status = 503
    code = "storage_unavailable"
    message = "저장소에 연결할 수 없습니다. 잠시 후 다시 시도해 주세요."


class StorageSetupError(Exception):
    """Storage cannot start (missing table, locked folder, bad credentials).

    Its text is one line for an operator; the CLI prints it and exits with status 2.
    """


class VersionConflict(CalsyncError):
    """`If-Match` named versions the event no longer has; `current` is the event as it is."""

    status = 412
    code = "version_conflict"
    message = "다른 사용자가 이벤트를 먼저 수정했습니다."

    def __init__(self, current: object) -> None:
        super().__init__()
        self.current = current


class IdempotencyMismatch(CalsyncError):
    status = 422
    code = "idempotency_mismatch"
    message = "같은 Idempotency-Key가 다른 요청 본문과 함께 사용되었습니다."


class IdempotencyInProgress(Conflict):
    code = "idempotency_in_progress"
    message = "같은 Idempotency-Key의 요청이 아직 처리 중입니다. 잠시 후 다시 시도해 주세요."
