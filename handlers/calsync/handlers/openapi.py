"""`GET /api/openapi.json`: the REST API as an OpenAPI 3.1 document (contract 10).

Built by apispec from the marshmallow schemas the handlers validate with (`schemas.py`), so
the document cannot drift from what the server accepts: lengths, required fields, dates and
counts come from the same fields. The WebSocket messages are described in README.
"""
from __future__ import annotations

from typing import Any

from marshmallow import fields

from calsync.handlers import schemas
from calsync.handlers.base import ApiHandler, to_json
from calsync.server.version import __version__
from calsync.storage import fields as records
from calsync.storage.fields import Count, Text, check_date

ERRORS = {
    400: "입력이 올바르지 않음 (`validation_error`, `invalid_json`)",
    401: "토큰이 없거나 올바르지 않음 (`unauthorized`, auth.mode: token)",
    403: "토큰의 역할이나 부서로는 할 수 없음 (`forbidden`)",
    404: "없는 부서·이벤트·경로 (`not_found`)",
    405: "허용되지 않는 메서드 (`method_not_allowed`)",
    409: "현재 상태와 충돌 (`conflict`: 같은 부서 이름, `idempotency_in_progress`)",
    412: "If-Match의 버전이 아님 (`version_conflict`, 지금의 이벤트가 `event`에)",
    413: "본문이 너무 큼 (`too_large`)",
    422: "같은 Idempotency-Key에 다른 본문 (`idempotency_mismatch`)",
    503: "저장소를 쓸 수 없음 (`storage_unavailable`)",
}
COMMON = (400, 401, 403, 404, 405, 413, 503)


def _field_properties(self: Any, field: fields.Field, **kwargs: Any) -> dict[str, Any]:
    """What our own fields check, in OpenAPI terms."""
    properties: dict[str, Any] = {}
    if isinstance(field, Text):
        properties["maxLength"] = field.max_length
        if field.required:
            properties["minLength"] = 1
            properties["pattern"] = r"\S"  # blank after trimming is refused
    if isinstance(field, Count):
        properties.update(type="integer", minimum=field.minimum, maximum=2**53)
    validators = field.validators if isinstance(field.validators, list) else list(field.validators)
    if check_date in validators:
        properties["format"] = "date"
    return properties


def _json(schema: str) -> dict[str, Any]:
    return {"application/json": {"schema": schema}}


def _responses(ok: dict[int, tuple[str, Any]], *errors: int) -> dict[str, Any]:
    answers: dict[str, Any] = {}
    for status, (description, content) in ok.items():
        answers[str(status)] = {"description": description, **({"content": content} if content else {})}
    for status in sorted(set(COMMON + errors)):
        answers[str(status)] = {"description": ERRORS[status], "content": _json("Error")}
    return answers


def _path_parameter(name: str, description: str) -> dict[str, Any]:
    return {"in": "path", "name": name, "required": True, "schema": {"type": "string"}, "description": description}


def _header(name: str, description: str) -> dict[str, Any]:
    return {"in": "header", "name": name, "required": False, "schema": {"type": "string"}, "description": description}


IDEMPOTENCY = _header("Idempotency-Key", "같은 키로 다시 보내면 처음의 201을 그대로 돌려받음 (1–255자 ASCII, contract 8.3)")
IF_MATCH = _header("If-Match", '이 버전일 때만 (`"3"`, `W/"3"`, `*`); 아니면 412 (contract 8.2)')
IF_NONE_MATCH = _header("If-None-Match", "ETag가 같으면 304")
ETAG = {"ETag": {"schema": {"type": "string"}, "description": "이벤트는 `\"<version>\"`, 목록은 `\"<epoch>.<seq>\"`"}}


def build_spec() -> dict[str, Any]:
    from apispec import APISpec  # on first use: built once, when someone first asks for it
    from apispec.ext.marshmallow import MarshmallowPlugin

    plugin = MarshmallowPlugin()
    spec = APISpec(
        title="calsync", version=__version__, openapi_version="3.1.0", plugins=[plugin],
        info={"description": "부서 캘린더 실시간 동기화 서버의 REST API. 실시간 변경은 `/ws` WebSocket으로 "
                             "(README의 WebSocket 표). 오류는 모두 `Error` 모양의 JSON입니다.",
              "license": {"name": "MIT", "identifier": "MIT"}},
    )
    assert plugin.converter is not None  # set by APISpec when it takes the plugin
    plugin.converter.add_attribute_function(_field_properties)
    spec.components.security_scheme("bearer", {"type": "http", "scheme": "bearer", "bearerFormat": "JWT",
                                                "description": "auth.mode: token일 때 (contract 9.1)"})
    for name, schema in [("Department", records.DepartmentSchema), ("Event", records.EventSchema),
                         ("DepartmentChanges", records.DepartmentSchema(partial=True)),
                         ("EventChanges", records.EventSchema(partial=True)),
                         ("Tombstone", schemas.TombstoneSchema), ("Error", schemas.ErrorSchema),
                         ("DepartmentsReply", schemas.DepartmentsReply), ("DepartmentReply", schemas.DepartmentReply),
                         ("EventReply", schemas.EventReply), ("EventsReply", schemas.EventsReply),
                         ("MessageReply", schemas.MessageReply), ("ServerStatusReply", schemas.ServerStatusReply)]:
        spec.components.schema(name, schema=schema)
    department_id = _path_parameter("department_id", "부서 id")
    event_id = _path_parameter("event_id", "이벤트 id")
    open_route: dict[str, Any] = {"security": [{}]}
    with_token: dict[str, Any] = {"security": [{}, {"bearer": []}]}

    spec.path("/", operations={"get": {**open_route, "summary": "서버 상태", "operationId": "root",
                                       "responses": _responses({200: ("실행 중", _json("ServerStatusReply"))})}})
    spec.path("/health", operations={"get": {**open_route, "summary": "프로세스가 살아 있음", "operationId": "health",
                                             "responses": _responses({200: ("ok", _json("ServerStatusReply"))})}})
    spec.path("/ready", operations={"get": {**open_route, "summary": "지금 쓰기가 가능함 (저장소)", "operationId": "ready",
                                            "responses": _responses({200: ("ready", _json("ServerStatusReply"))})}})
    spec.path("/api/departments", operations={
        "get": {**with_token, "summary": "부서 목록 (토큰이 읽을 수 있는 부서만)", "operationId": "listDepartments",
                "responses": _responses({200: ("부서들", _json("DepartmentsReply"))})},
        "post": {**with_token, "summary": "부서 만들기 (admin)", "operationId": "createDepartment",
                 "parameters": [IDEMPOTENCY],
                 "requestBody": {"required": True, "content": _json("Department")},
                 "responses": _responses({201: ("만든 부서", _json("DepartmentReply"))}, 409, 422)},
    })
    spec.path("/api/departments/{department_id}", operations={
        "get": {**with_token, "summary": "부서 하나", "operationId": "getDepartment", "parameters": [department_id],
                "responses": _responses({200: ("부서", _json("DepartmentReply"))})},
        "put": {**with_token, "summary": "부서 고치기 (admin; 준 항목만)", "operationId": "updateDepartment",
                "parameters": [department_id], "requestBody": {"required": True, "content": _json("DepartmentChanges")},
                "responses": _responses({200: ("고친 부서", _json("DepartmentReply"))}, 409)},
        "delete": {**with_token, "summary": "부서와 그 이벤트 지우기 (admin)", "operationId": "deleteDepartment",
                   "parameters": [department_id],
                   "responses": _responses({200: ("지움", _json("MessageReply"))})},
    })
    spec.path("/api/departments/{department_id}/events.ics", operations={
        "get": {"security": [{}, {"bearer": []}], "summary": "부서의 iCalendar 피드 (구독용)", "operationId": "calendarFeed",
                "parameters": [department_id, IF_NONE_MATCH,
                               {"in": "query", "name": "token", "required": False, "schema": {"type": "string"},
                                "description": "auth.mode: token일 때, 헤더를 못 보내는 캘린더 앱을 위해"}],
                "responses": _responses({200: ("RFC 5545", {"text/calendar": {"schema": {"type": "string"}}}),
                                         304: ("바뀌지 않음", None)})},
    })
    spec.path("/api/events/{department_id}", operations={
        "get": {**with_token, "summary": "부서의 이벤트: 전부, 날짜 범위, 또는 커서 이후 변경 (contract 8.5)",
                "operationId": "listEvents",
                "parameters": [department_id, IF_NONE_MATCH, {"in": "query", "schema": schemas.EventsQuerySchema}],
                "responses": _responses({200: ("이벤트들", _json("EventsReply")), 304: ("바뀌지 않음", None)})},
        "post": {**with_token, "summary": "이벤트 만들기 (write)", "operationId": "createEvent",
                 "parameters": [department_id, IDEMPOTENCY],
                 "requestBody": {"required": True, "content": _json("Event")},
                 "responses": _responses({201: ("만든 이벤트", _json("EventReply"))}, 409, 422)},
    })
    spec.path("/api/events/{event_id}", operations={
        "put": {**with_token, "summary": "이벤트 고치기 (write; 준 항목만)", "operationId": "updateEvent",
                "parameters": [event_id, IF_MATCH], "requestBody": {"required": True, "content": _json("EventChanges")},
                "responses": _responses({200: ("고친 이벤트", _json("EventReply"))}, 412)},
        "delete": {**with_token, "summary": "이벤트 지우기 (write)", "operationId": "deleteEvent",
                   "parameters": [event_id, IF_MATCH],
                   "responses": _responses({200: ("지움", _json("MessageReply"))}, 412)},
    })
    spec.path("/metrics", operations={"get": {**open_route, "summary": "Prometheus 지표", "operationId": "metrics",
                                              "responses": _responses({200: ("Prometheus text format", {
                                                  "text/plain": {"schema": {"type": "string"}}})})}})
    document = _without_null_defaults(spec.to_dict())
    for name in ("DepartmentChanges", "EventChanges"):
        # A PUT changes only the fields it sends: no field has a default a generated client
        # would fill in (and so wipe what the user did not touch), and at least one is given.
        changes = document["components"]["schemas"][name]
        for field in changes["properties"].values():
            field.pop("default", None)
        changes["minProperties"] = 1
    for path in document["paths"].values():  # ETag on every answer that carries one
        for method, operation in path.items():
            for status in ("200", "201", "304"):
                if status in operation["responses"] and method in ("get", "post", "put"):
                    operation["responses"][status].setdefault("headers", {}).update(ETAG)
    return document


def _without_null_defaults(node: Any) -> Any:
    """`load_default=None` means "not given", which a query argument says by being absent."""
    if isinstance(node, dict):
        return {k: _without_null_defaults(v) for k, v in node.items() if not (k == "default" and v is None)}
    if isinstance(node, list):
        return [_without_null_defaults(v) for v in node]
    return node


class OpenApiHandler(ApiHandler):
    open_access = True

    def get(self) -> None:
        if self.context.openapi_json is None:
            self.context.openapi_json = to_json(build_spec())
        self.finish(self.context.openapi_json)


routes = [(r"/api/openapi\.json", OpenApiHandler)]
