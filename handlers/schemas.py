"""Input validation and output shapes, one marshmallow schema per resource.

`load` turns a client's JSON into clean fields or raises `ValidationFailed` with
per-field errors; `dump` shapes every record the server sends. Server-owned fields are
`dump_only`, so a client that sends them is ignored, like any unknown field.
"""
from __future__ import annotations

import json
import re
from datetime import date
from typing import Any, Mapping
from urllib.parse import urlsplit

from marshmallow import EXCLUDE, Schema, ValidationError, fields, pre_load, validates_schema

from calsync.storage.errors import ValidationFailed
from calsync.storage.feed import MAX_PAGE, Cursor

MISSING = "필수 항목입니다."
BLANK = "비어 있을 수 없습니다."
NOT_TEXT = "문자열이어야 합니다."
DATE_PATTERN = re.compile(r"^\d{4}-\d{2}-\d{2}$")
SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


def parse_json(text: str) -> Any:
    """JSON from a client, or `ValueError`: also for nesting too deep to parse and for a
    `\\ud800`-style escape that leaves half a surrogate pair, which no store can encode."""
    try:
        document = json.loads(text)
    except RecursionError:
        raise ValueError("nested too deep") from None
    if SURROGATE_ESCAPE.search(text):
        try:
            json.dumps(document, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError:
            raise ValueError("a lone surrogate") from None
    return document


def too_long(limit: int) -> str:
    return f"{limit}자 이하여야 합니다."


class Text(fields.String):
    """A string of at most `max_length` characters; `trim` strips it, `required` forbids blank."""

    default_error_messages = {"required": MISSING, "null": MISSING, "invalid": NOT_TEXT}

    def __init__(self, max_length: int, *, trim: bool = False, **kwargs: Any) -> None:
        if not kwargs.get("required"):
            kwargs.setdefault("load_default", "")
        super().__init__(**kwargs)
        self.max_length = max_length
        self.trim = trim

    def _deserialize(self, value: Any, attr: Any, data: Any, **kwargs: Any) -> str:
        text = super()._deserialize(value, attr, data, **kwargs)
        if self.trim:
            text = text.strip()
        if self.required and not text:
            raise ValidationError(BLANK)
        if len(text) > self.max_length:
            raise ValidationError(too_long(self.max_length))
        return text


class Count(fields.Field):
    """A whole number in `[minimum, 2**53]`: a JSON integer, or with `from_text` the digits of
    a query-string argument."""

    default_error_messages = {"invalid": "정수여야 합니다.", "null": "정수여야 합니다."}

    def __init__(self, minimum: int, *, from_text: bool = False, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.minimum = minimum
        self.from_text = from_text

    def _deserialize(self, value: Any, attr: Any, data: Any, **kwargs: Any) -> int:
        if self.from_text and isinstance(value, str) and value.isascii() and value.isdigit() and len(value) <= 16:
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.make_error("invalid")
        if not self.minimum <= value <= 2**53:
            raise ValidationError(f"{self.minimum} 이상 {2**53} 이하여야 합니다.")
        return value


def check_date(value: str) -> None:
    if not DATE_PATTERN.match(value):
        raise ValidationError("YYYY-MM-DD 형식의 날짜여야 합니다.")
    try:
        date.fromisoformat(value)
    except ValueError:
        raise ValidationError("존재하지 않는 날짜입니다.") from None


def check_url(value: str) -> None:
    if not value:
        return
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc or any(c.isspace() for c in value):
        raise ValidationError("http(s)로 시작하는 절대 URL이어야 합니다.")


class ResourceSchema(Schema):
    """Loads a JSON object; a missing or blank required field gets the resource's own message."""

    #: The contract's message when a required field is missing or blank.
    required_message = ValidationFailed.message

    class Meta:
        unknown = EXCLUDE

    @pre_load
    def _null_is_empty(self, data: Any, **kwargs: Any) -> Any:
        """`null` on an optional text field means "" (older clients send it)."""
        if isinstance(data, dict):
            return {k: ("" if v is None and k in self.fields and not self.fields[k].required else v)
                    for k, v in data.items()}
        return data

    def parse(self, data: Mapping[str, Any], *, partial: bool = False) -> dict[str, Any]:
        try:
            return self.load(data, partial=partial)
        except ValidationError as exc:
            errors = exc.normalized_messages()
            required = [f for f, spec in self.fields.items() if spec.required]
            presence = any(m in (MISSING, BLANK) for f in required for m in errors.get(f, []))
            raise ValidationFailed(self.required_message if presence else None, errors=errors) from None

    def parse_changes(self, data: Mapping[str, Any]) -> dict[str, Any]:
        """A PUT body: only the fields given, each validated; at least one."""
        changes = self.parse(data, partial=True)
        given = {k: v for k, v in changes.items() if k in data}
        if not given:
            raise ValidationFailed("수정할 항목이 없습니다.", errors={"_schema": ["수정할 항목이 없습니다."]})
        return given


class DepartmentSchema(ResourceSchema):
    required_message = "부서 이름은 필수입니다."

    id = fields.String(dump_only=True)
    name = Text(100, trim=True, required=True)
    description = Text(1000)
    created_at = fields.String(dump_only=True)
    updated_at = fields.String(dump_only=True)
    seq = fields.Integer(dump_only=True)
    epoch = fields.String(dump_only=True)


class EventSchema(ResourceSchema):
    required_message = "날짜와 제목은 필수입니다."

    id = fields.String(dump_only=True)
    department_id = fields.String(dump_only=True)
    event_date = Text(10, trim=True, required=True, validate=check_date)
    title = Text(200, trim=True, required=True)
    description = Text(5000)
    time = Text(50, trim=True)
    url = Text(2048, trim=True, validate=check_url)
    created_at = fields.String(dump_only=True)
    last_modified = fields.String(dump_only=True)
    version = fields.Integer(dump_only=True)
    seq = fields.Integer(dump_only=True)


class DateRangeSchema(ResourceSchema):
    """`?from=YYYY-MM-DD&to=YYYY-MM-DD` on a department's events, both inclusive and optional."""

    required_message = "날짜 범위가 올바르지 않습니다."

    date_from = fields.String(data_key="from", validate=check_date, load_default=None)
    date_to = fields.String(data_key="to", validate=check_date, load_default=None)

    @validates_schema
    def _ordered(self, data: dict[str, Any], **kwargs: Any) -> None:
        if data.get("date_from") and data.get("date_to") and data["date_from"] > data["date_to"]:
            raise ValidationError("from은 to보다 늦을 수 없습니다.", field_name="from")


class CursorSchema(ResourceSchema):
    """`since`, `epoch` and `limit` (contract 8.5): a client's place in a department's feed."""

    since = Count(0, load_default=None)
    epoch = Text(64, load_default=None)
    limit = Count(1, load_default=None)

    def cursor(self, fields: Mapping[str, Any]) -> Cursor | None:
        return None if fields["since"] is None else Cursor(fields["since"], fields["epoch"])

    @staticmethod
    def page_limit(fields: Mapping[str, Any]) -> int:
        return min(fields["limit"] or MAX_PAGE, MAX_PAGE)


class EventsQuerySchema(CursorSchema, DateRangeSchema):
    """`GET /api/events/{department_id}`: a date range, or a cursor, not both."""

    since = Count(0, from_text=True, load_default=None)
    limit = Count(1, from_text=True, load_default=None)

    @validates_schema
    def _cursor_or_dates(self, data: dict[str, Any], **kwargs: Any) -> None:
        if data.get("since") is not None and (data.get("date_from") or data.get("date_to")):
            raise ValidationError("since는 from/to와 함께 쓸 수 없습니다.", field_name="since")


class RoomSchema(ResourceSchema):
    """The payload of join_department and leave_department."""

    required_message = "department_id는 필수입니다."

    department_id = Text(200, trim=True, required=True)


class JoinSchema(RoomSchema, CursorSchema):
    """join_department: a room, and optionally the cursor to catch up from (unpaged)."""


class SyncRequestSchema(RoomSchema, CursorSchema):
    """sync_request: a room, and optionally a cursor and a page size."""


class AuthSchema(ResourceSchema):
    """The payload of `auth`: a token, for clients that cannot put it on the URL or a header."""

    required_message = "token은 필수입니다."

    token = Text(8192, required=True)


# -- answers: what the server sends, described for the OpenAPI document -------------------
class ErrorSchema(Schema):
    success = fields.Boolean(required=True, metadata={"enum": [False]})
    message = fields.String(required=True, metadata={"description": "사람이 읽는 한국어 메시지"})
    code = fields.String(required=True, metadata={"description": "기계가 읽는 오류 코드 (contract 2, 9)"})
    errors = fields.Dict(keys=fields.String(), values=fields.Raw(), metadata={"description": "필드별 오류"})
    event = fields.Nested(EventSchema, metadata={"description": "412 version_conflict: 지금의 이벤트"})


class Reply(Schema):
    success = fields.Boolean(required=True, metadata={"enum": [True]})


class DepartmentsReply(Reply):
    departments = fields.List(fields.Nested(DepartmentSchema), required=True)


class DepartmentReply(Reply):
    department = fields.Nested(DepartmentSchema, required=True)


class EventReply(Reply):
    event = fields.Nested(EventSchema, required=True)


class TombstoneSchema(Schema):
    id = fields.String(required=True)
    seq = fields.Integer(required=True)


class EventsReply(Reply):
    events = fields.List(fields.Nested(EventSchema), required=True)
    deleted = fields.List(fields.Nested(TombstoneSchema), required=True)
    seq = fields.Integer(required=True)
    epoch = fields.String(required=True)
    reset = fields.Boolean(required=True)
    more = fields.Boolean(required=True)


class MessageReply(Reply):
    message = fields.String(required=True)


class ServerStatusReply(Reply):
    status = fields.String(required=True)
    message = fields.String()
    version = fields.String()
    storage = fields.String()


department_schema = DepartmentSchema()
event_schema = EventSchema()
events_query_schema = EventsQuerySchema()
room_schema = RoomSchema()
join_schema = JoinSchema()
sync_request_schema = SyncRequestSchema()
auth_schema = AuthSchema()
