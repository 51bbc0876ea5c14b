"""Input validation and output shapes of the transports, one marshmallow schema per message.

The records' own field rules (`DepartmentSchema`, `EventSchema`) live in
`calsync.storage.fields`, shared with migrations; here are the query arguments, the
WebSocket payloads and the answers as the OpenAPI document describes them.
"""
from __future__ import annotations

import json
import re
from typing import Any, Mapping

from marshmallow import Schema, ValidationError, fields, validates_schema

from calsync.storage.feed import MAX_PAGE, Cursor
from calsync.storage.fields import Count, DepartmentSchema, EventSchema, ResourceSchema, Text, check_date

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
    id = fields.String(required=True, metadata={"format": "uuid"})
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
    broker = fields.String(metadata={"enum": ["local", "up", "down"],
                                     "description": "/ready: 공유 브로커(Redis)가 응답하는지 (contract 12.3)"})


events_query_schema = EventsQuerySchema()
room_schema = RoomSchema()
join_schema = JoinSchema()
sync_request_schema = SyncRequestSchema()
auth_schema = AuthSchema()
