"""The field rules of records: what a department or an event may hold (lengths, dates, URLs).

They live beside the records so that every way in shares them: the REST and WebSocket
handlers validate client JSON with them, and migrations check the original server's files
with the same rules. `parse` raises `ValidationFailed` with per-field errors.
"""
from __future__ import annotations

import re
from datetime import date
from typing import Any, Mapping

from marshmallow import EXCLUDE, Schema, ValidationError, fields, pre_load

from calsync.storage.errors import ValidationFailed

MISSING = "필수 항목입니다."
BLANK = "비어 있을 수 없습니다."
NOT_TEXT = "문자열이어야 합니다."
DATE_PATTERN = re.compile(r"^\d{4}-\d{2}-\d{2}$")


#: C0 control characters but tab and newline (contract 13): they break .ics lines and logs.
CONTROL = re.compile("[\x00-\x08\x0b-\x1f]")
NO_CONTROL = "제어 문자는 쓸 수 없습니다 (탭과 줄바꿈만 됩니다)."
#: What `str.strip` and `str.isspace` take for blank, spelled out: regex `\s` differs between
#: Python and the ECMA dialect OpenAPI tools use (U+0085), and the patterns must mean one thing.
BLANK_CHARS = r"\t\n\x0b\x0c\r\x1c-\x1f \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"
#: `url`, when not empty: an absolute http(s) URL without blanks or control characters.
HTTP_URL = re.compile(rf"[hH][tT][tT][pP][sS]?://[^{BLANK_CHARS}/?#\x00-\x1f]+[^{BLANK_CHARS}\x00-\x1f]*")
NOT_A_URL = "http(s)로 시작하는 절대 URL이어야 합니다."

# The same rules as patterns over a field's whole value, as it arrives (before trimming), for
# the OpenAPI document: a client that keeps to them is never refused, and one that does not
# is (schemathesis checks both ways).
_ALLOWED = r"[^\x00-\x08\x0b-\x1f]"  # anything but the refused controls
_EDGE = r"[\t\n \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]*"  # blanks trimming removes, but controls
NO_CONTROL_PATTERN = rf"^{_ALLOWED}*$"
NOT_BLANK_PATTERN = rf"^{_ALLOWED}*[^{BLANK_CHARS}\x00-\x1f]{_ALLOWED}*$"
URL_PATTERN = rf"^{_EDGE}(?:{HTTP_URL.pattern})?{_EDGE}$"


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
        if CONTROL.search(text):  # before trimming: a control character is refused wherever it is
            raise ValidationError(NO_CONTROL)
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
    """Empty, or `HTTP_URL` (one rule, also the document's: "http://[" once raised in urlsplit)."""
    if value and not HTTP_URL.fullmatch(value):
        raise ValidationError(NOT_A_URL)


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


# What the server writes into records, for the OpenAPI document: ids are UUIDs (migrated ones
# too: uuid5), times RFC 3339 in UTC with milliseconds.
UUID = {"format": "uuid"}
TIMESTAMP = {"format": "date-time"}


class DepartmentSchema(ResourceSchema):
    required_message = "부서 이름은 필수입니다."

    id = fields.String(dump_only=True, metadata=UUID)
    name = Text(100, trim=True, required=True)
    description = Text(1000)
    created_at = fields.String(dump_only=True, metadata=TIMESTAMP)
    updated_at = fields.String(dump_only=True, metadata=TIMESTAMP)
    seq = fields.Integer(dump_only=True)
    epoch = fields.String(dump_only=True)


class EventSchema(ResourceSchema):
    required_message = "날짜와 제목은 필수입니다."

    id = fields.String(dump_only=True, metadata=UUID)
    department_id = fields.String(dump_only=True, metadata=UUID)
    event_date = Text(10, trim=True, required=True, validate=check_date)
    title = Text(200, trim=True, required=True)
    description = Text(5000)
    time = Text(50, trim=True)
    url = Text(2048, trim=True, validate=check_url)
    created_at = fields.String(dump_only=True, metadata=TIMESTAMP)
    last_modified = fields.String(dump_only=True, metadata=TIMESTAMP)
    version = fields.Integer(dump_only=True)
    seq = fields.Integer(dump_only=True)



department_schema = DepartmentSchema()
event_schema = EventSchema()
