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
from calsync.handlers.preconditions import IDEMPOTENCY_KEY
from calsync.server.version import __version__
from calsync.storage import fields as records
from calsync.storage.fields import (
    NO_CONTROL_PATTERN,
    NOT_BLANK_PATTERN,
    URL_PATTERN,
    Count,
    Text,
    check_date,
    check_url,
)

ERRORS = {
    400: "입력이 올바르지 않음 (`validation_error`, `invalid_json`): 필드 규칙, 본문이 JSON 객체가 아님, "
         "Idempotency-Key 형식, 허용되지 않은 Host",
    401: "토큰이 없거나 올바르지 않음 (`unauthorized`, auth.mode: token)",
    403: "토큰의 역할이나 부서로는 할 수 없음, 또는 다른 사이트의 브라우저가 쓰기를 보냄 (`forbidden`)",
    404: "없는 부서·이벤트·경로 (`not_found`)",
    405: "허용되지 않는 메서드 (`method_not_allowed`, `Allow` 헤더에 되는 메서드)",
    409: "현재 상태와 충돌 (`conflict`: 같은 부서 이름, `idempotency_in_progress`)",
    412: "If-Match의 버전이 아님 (`version_conflict`, 지금의 이벤트가 `event`에)",
    413: "본문이 `server.max_body_bytes`보다 큼 (`too_large`; 길이를 밝혔든 chunked든)",
    422: "같은 Idempotency-Key에 다른 본문 (`idempotency_mismatch`)",
    431: "헤더가 64 KiB보다 큼 (`too_large`)",
    503: "저장소를 쓸 수 없음 (`storage_unavailable`)",
}
#: Every route may answer these (a bad Host, a body or headers too large, storage away).
COMMON = (400, 404, 405, 413, 431, 503)
#: ... and, when auth is on, these unless the route is open to all.
WITH_TOKEN = (401, 403)
TAGS = [
    {"name": "status", "description": "프로세스와 저장소의 상태 (인증 없이)"},
    {"name": "departments", "description": "부서 (만들기·고치기·지우기는 admin)"},
    {"name": "events", "description": "부서의 이벤트와 변경 피드 (contract 8)"},
    {"name": "feeds", "description": "캘린더 앱이 구독하는 iCalendar 피드"},
]


def _field_properties(self: Any, field: fields.Field, **kwargs: Any) -> dict[str, Any]:
    """What our own fields check, in OpenAPI terms."""
    properties: dict[str, Any] = {}
    validators = field.validators if isinstance(field.validators, list) else list(field.validators)
    if isinstance(field, Text):
        properties["maxLength"] = field.max_length
        properties["pattern"] = NO_CONTROL_PATTERN
        if field.required:
            properties["minLength"] = 1
            properties["pattern"] = NOT_BLANK_PATTERN  # blank after trimming is refused
        if check_url in validators:
            properties["pattern"] = URL_PATTERN
    if isinstance(field, Count):
        properties.update(type="integer", minimum=field.minimum, maximum=2**53)
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
    return {"in": "path", "name": name, "required": True, "schema": {"type": "string", "format": "uuid"},
            "description": description}


def _header(name: str, description: str, schema: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"in": "header", "name": name, "required": False, "schema": schema or {"type": "string"},
            "description": description}


IDEMPOTENCY = _header("Idempotency-Key", "같은 키로 다시 보내면 처음의 201을 그대로 돌려받음 (1–255자 ASCII, contract 8.3)",
                      {"type": "string", "pattern": IDEMPOTENCY_KEY.pattern})
IF_MATCH = _header("If-Match", '이 버전일 때만 (`"3"`, `W/"3"`, `*`); 아니면 412 (contract 8.2)')
IF_NONE_MATCH = _header("If-None-Match", "ETag가 같으면 304")
ETAG = {"ETag": {"schema": {"type": "string"}, "description": "이벤트는 `\"<version>\"`, 목록은 `\"<epoch>.<seq>\"`"}}
REPLAYED = {"Idempotent-Replayed": {"schema": {"type": "string", "enum": ["true"]},
                                    "description": "같은 Idempotency-Key의 처음 답을 다시 보냄 (contract 8.3)"}}
EVENTS_PATH_ID = "부서 id (GET, POST) 또는 이벤트 id (PUT, DELETE)"


def build_spec() -> dict[str, Any]:
    from apispec import APISpec  # on first use: built once, when someone first asks for it
    from apispec.ext.marshmallow import MarshmallowPlugin

    plugin = MarshmallowPlugin()
    spec = APISpec(
        title="calsync", version=__version__, openapi_version="3.1.0", plugins=[plugin],
        info={"description": "부서 캘린더 실시간 동기화 서버의 REST API. 실시간 변경은 `/ws` WebSocket으로 "
                             "(README의 WebSocket 표). 오류는 모두 `Error` 모양의 JSON입니다.",
              "license": {"name": "MIT", "identifier": "MIT"}},
        servers=[{"url": "/", "description": "이 문서를 준 서버"}], tags=TAGS,
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

    def open_route(tag: str, summary: str, operation_id: str, ok: dict[int, tuple[str, Any]]) -> dict[str, Any]:
        """A route anyone may call, auth on or off: no token, so no 401 or 403."""
        return {"get": {"security": [{}], "tags": [tag], "summary": summary, "operationId": operation_id,
                        "responses": _responses(ok)}}

    def with_token(tag: str, summary: str, operation_id: str, ok: dict[int, tuple[str, Any]], *errors: int,
                   **more: Any) -> dict[str, Any]:
        return {"security": [{}, {"bearer": []}], "tags": [tag], "summary": summary, "operationId": operation_id,
                "responses": _responses(ok, *WITH_TOKEN, *errors), **more}

    def events_id(description: str) -> dict[str, Any]:
        return _path_parameter("id", f"{EVENTS_PATH_ID}: 여기서는 {description}")

    spec.path("/", operations=open_route("status", "서버 상태", "root", {200: ("실행 중", _json("ServerStatusReply"))}))
    spec.path("/health", operations=open_route("status", "프로세스가 살아 있음", "health",
                                               {200: ("ok", _json("ServerStatusReply"))}))
    spec.path("/ready", operations=open_route("status", "지금 쓰기가 가능함 (저장소)", "ready",
                                              {200: ("ready", _json("ServerStatusReply"))}))
    spec.path("/api/departments", operations={
        "get": with_token("departments", "부서 목록 (토큰이 읽을 수 있는 부서만)", "listDepartments",
                          {200: ("부서들", _json("DepartmentsReply"))}),
        "post": with_token("departments", "부서 만들기 (admin)", "createDepartment",
                           {201: ("만든 부서", _json("DepartmentReply"))}, 409, 422, parameters=[IDEMPOTENCY],
                           requestBody={"required": True, "content": _json("NewDepartment")}),
    })
    spec.path("/api/departments/{department_id}", operations={
        "get": with_token("departments", "부서 하나", "getDepartment", {200: ("부서", _json("DepartmentReply"))},
                          parameters=[department_id]),
        "put": with_token("departments", "부서 고치기 (admin; 준 항목만)", "updateDepartment",
                          {200: ("고친 부서", _json("DepartmentReply"))}, 409, parameters=[department_id],
                          requestBody={"required": True, "content": _json("DepartmentChanges")}),
        "delete": with_token("departments", "부서와 그 이벤트 지우기 (admin)", "deleteDepartment",
                             {200: ("지움", _json("MessageReply"))}, parameters=[department_id]),
    })
    spec.path("/api/departments/{department_id}/events.ics", operations={
        "get": with_token("feeds", "부서의 iCalendar 피드 (구독용)", "calendarFeed",
                          {200: ("RFC 5545", {"text/calendar": {"schema": {"type": "string"}}}), 304: ("바뀌지 않음", None)},
                          parameters=[department_id, IF_NONE_MATCH,
                                      {"in": "query", "name": "token", "required": False, "schema": {"type": "string"},
                                       "description": "auth.mode: token일 때, 헤더를 못 보내는 캘린더 앱을 위해"}]),
    })
    # One template (OpenAPI forbids two paths that differ only by a parameter's name): the
    # id is a department's for GET and POST, an event's for PUT and DELETE, as in the old server.
    spec.path("/api/events/{id}", operations={
        "get": with_token(
            "events", "부서의 이벤트: 전부, 날짜 범위, 또는 커서 이후 변경 (contract 8.5)", "listEvents",
            {200: ("이벤트들", _json("EventsReply")), 304: ("바뀌지 않음", None)},
            description="`id`는 부서 id. `from`/`to`(둘 다 포함, from ≤ to)로 날짜 범위를, 또는 `since`/`epoch`/`limit`로 "
                        "커서 이후의 변경을 받습니다. `since`와 `from`/`to`를 함께 주거나 from이 to보다 늦으면 400.",
            parameters=[events_id("부서 id"), IF_NONE_MATCH, {"in": "query", "schema": schemas.EventsQuerySchema}]),
        "post": with_token(
            "events", "이벤트 만들기 (write)", "createEvent", {201: ("만든 이벤트", _json("EventReply"))}, 409, 422,
            description="`id`는 이벤트를 넣을 부서의 id.",
            parameters=[events_id("부서 id"), IDEMPOTENCY], requestBody={"required": True, "content": _json("NewEvent")}),
        "put": with_token(
            "events", "이벤트 고치기 (write; 준 항목만)", "updateEvent", {200: ("고친 이벤트", _json("EventReply"))}, 412,
            description="`id`는 이벤트 id. 보낸 항목만 바뀝니다 (하나 이상).",
            parameters=[events_id("이벤트 id"), IF_MATCH], requestBody={"required": True, "content": _json("EventChanges")}),
        "delete": with_token(
            "events", "이벤트 지우기 (write)", "deleteEvent", {200: ("지움", _json("MessageReply"))}, 412,
            description="`id`는 이벤트 id.", parameters=[events_id("이벤트 id"), IF_MATCH]),
    })
    spec.path("/metrics", operations=open_route("status", "Prometheus 지표", "metrics", {200: (
        "Prometheus text format", {"text/plain": {"schema": {"type": "string"}}})}))
    document = _without_null_defaults(spec.to_dict())
    schemas_ = document["components"]["schemas"]
    for name in ("Department", "Event"):  # what a client sends: no server-made fields
        schemas_[f"New{name}"] = {**schemas_[name], "properties": {
            key: field for key, field in schemas_[name]["properties"].items() if not field.get("readOnly")}}
    for name in ("DepartmentChanges", "EventChanges"):
        # A PUT changes only the fields it sends: no field has a default a generated client
        # would fill in (and so wipe what the user did not touch), and at least one is given.
        changes = schemas_[name]
        changes["properties"] = {key: field for key, field in changes["properties"].items() if not field.get("readOnly")}
        for field in changes["properties"].values():
            field.pop("default", None)
        changes["minProperties"] = 1
    for record, inputs in (("Department", ("NewDepartment", "DepartmentChanges")), ("Event", ("NewEvent", "EventChanges"))):
        for name in inputs:  # older clients send null for "" in the fields a record may leave empty
            properties = schemas_[name]["properties"]
            for key in properties.keys() - set(schemas_[record]["required"]):
                properties[key] = {**properties[key], "type": ["string", "null"]}
    for path in document["paths"].values():  # ETag on every answer that carries one
        for method, operation in path.items():
            for parameter in operation.get("parameters", []):
                if parameter["in"] == "query":  # Tornado drops control characters from query
                    parameter["schema"].pop("pattern", None)  # arguments: no text rule applies there
            for status in ("200", "201", "304"):
                if status in operation["responses"] and method in ("get", "post", "put"):
                    operation["responses"][status].setdefault("headers", {}).update(ETAG)
            if "201" in operation["responses"]:
                operation["responses"]["201"]["headers"].update(REPLAYED)
    for (path, method, status), links in LINKS.items():
        document["paths"][path][method]["responses"][status]["links"] = {
            target: {"operationId": target, "parameters": {name: source}} for target, (name, source) in links.items()}
    return document


#: What a created record's id may be used for next: OpenAPI links, for tools that follow them
#: (schemathesis's stateful tests; documentation viewers).
DEPARTMENT_ID = "$response.body#/department/id"
EVENT_ID = "$response.body#/event/id"
LINKS: dict[tuple[str, str, str], dict[str, tuple[str, str]]] = {
    ("/api/departments", "post", "201"): {
        "getDepartment": ("department_id", DEPARTMENT_ID), "updateDepartment": ("department_id", DEPARTMENT_ID),
        "deleteDepartment": ("department_id", DEPARTMENT_ID), "listEvents": ("id", DEPARTMENT_ID),
        "createEvent": ("id", DEPARTMENT_ID), "calendarFeed": ("department_id", DEPARTMENT_ID)},
    ("/api/events/{id}", "post", "201"): {"updateEvent": ("id", EVENT_ID), "deleteEvent": ("id", EVENT_ID)},
    ("/api/events/{id}", "put", "200"): {"updateEvent": ("id", EVENT_ID), "deleteEvent": ("id", EVENT_ID)},
}


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
