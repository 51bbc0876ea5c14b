"""Domain errors: raised by storage and the server core, answered in exactly one place.

Each error carries the machine `code` and the Korean `message` of the contract, nothing of
any protocol: `calsync.handlers.errors` gives each its HTTP status, `ApiHandler.write_error`
turns them into REST bodies and the WebSocket handler into `error` frames. Errors only a
transport can meet (a body too large, an unknown WebSocket event) live there too.
"""
from __future__ import annotations

from calsync.storage.records import Event


class CalsyncError(Exception):
    code = "internal"
    message = "서버 내부 오류가 발생했습니다."

    def __init__(self, message: str | None = None, errors: dict | None = None) -> None:
        super().__init__(message or self.message)
        if message is not None:
            self.message = message
        self.errors = errors


class ValidationFailed(CalsyncError):
    code = "validation_error"
    message = "입력값이 올바르지 않습니다."


class Unauthorized(CalsyncError):
    code = "unauthorized"
    message = "인증이 필요합니다."


class Forbidden(CalsyncError):
    code = "forbidden"
    message = "권한이 없습니다."


class NotFound(CalsyncError):
    code = "not_found"
    message = "요청한 경로를 찾을 수 없습니다."


class DepartmentNotFound(NotFound):
    message = "부서를 찾을 수 없습니다."


class EventNotFound(NotFound):
    message = "이벤트를 찾을 수 없습니다."


class Conflict(CalsyncError):
    code = "conflict"
    message = "요청이 현재 상태와 충돌합니다."


class DuplicateDepartmentName(Conflict):
    message = "이미 존재하는 부서 이름입니다."


class StorageUnavailable(CalsyncError):
    """The backend did not answer (outage, throttling, timeout); the request may be retried."""

    code = "storage_unavailable"
    message = "저장소에 연결할 수 없습니다. 잠시 후 다시 시도해 주세요."


class StorageSetupError(Exception):
    """Storage cannot start (missing table, locked folder, bad credentials).

    Its text is one line for an operator; the CLI prints it and exits with status 2.
    """


class VersionConflict(CalsyncError):
    """`If-Match` named versions the event no longer has; `current` is the event as it is."""

    code = "version_conflict"
    message = "다른 사용자가 이벤트를 먼저 수정했습니다."

    def __init__(self, current: Event) -> None:
        super().__init__()
        self.current = current


class IdempotencyMismatch(CalsyncError):
    code = "idempotency_mismatch"
    message = "같은 Idempotency-Key가 다른 요청 본문과 함께 사용되었습니다."


class IdempotencyInProgress(Conflict):
    code = "idempotency_in_progress"
    message = "같은 Idempotency-Key의 요청이 아직 처리 중입니다. 잠시 후 다시 시도해 주세요."
