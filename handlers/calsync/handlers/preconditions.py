"""HTTP's conditional and idempotent requests, as calsync reads them (contract 8.2, 8.3, 8.5).

An event's entity tag is its version, `"3"`; a department's event list has `"<epoch>.<seq>"`.
"""
from __future__ import annotations

import re

from calsync.storage.errors import ValidationFailed

IDEMPOTENCY_KEY = re.compile(r"^[\x20-\x7e]{1,255}$")
TAG = re.compile(r'\s*(W/)?"([^"]*)"\s*(?:,|$)')


def event_etag(version: int) -> str:
    return f'"{version}"'


def entity_tags(header: str) -> list[tuple[bool, str]]:
    """`W/"a", "b"` as `[(weak, "a"), (False, "b")]`; text that is not a tag is skipped."""
    tags, position = [], 0
    while position < len(header):
        match = TAG.match(header, position)
        if match is None:
            position = header.find(",", position) + 1 or len(header)  # not a tag: skip to the next
            continue
        tags.append((bool(match.group(1)), match.group(2)))
        position = match.end()
    return tags


def if_match_versions(header: str | None) -> frozenset[int] | None:
    """The versions `If-Match` allows; None when any will do (no header, or `*`).

    Strong comparison, as RFC 9110 asks of If-Match: weak tags and tags that are not a
    version match nothing, so a request naming only those is refused with 412.
    """
    if header is None or header.strip() == "*":
        return None
    return frozenset(int(value) for weak, value in entity_tags(header)
                     if not weak and value.isascii() and value.isdigit() and len(value) <= 16)


def none_match(header: str | None, etag: str) -> bool:
    """Whether `If-None-Match` names `etag` (weak comparison, `*` included): answer 304."""
    if header is None:
        return False
    if header.strip() == "*":
        return True
    return any(f'"{value}"' == etag for _weak, value in entity_tags(header))


def idempotency_key(header: str | None) -> str | None:
    """The `Idempotency-Key` header, checked: 1–255 printable ASCII characters."""
    if header is None:
        return None
    if not IDEMPOTENCY_KEY.match(header):
        message = "Idempotency-Key는 1~255자의 출력 가능한 ASCII 문자여야 합니다."
        raise ValidationFailed(message, errors={"Idempotency-Key": [message]})
    return header
