"""The in-process room registry: which connection listens to which department.

The hub knows nothing of HTTP or Tornado: a member is anything with `send(push)` and
`close(code, reason)`. A push is encoded once and written to every member; a member that
fails to take it is dropped without stopping the others.
"""
from __future__ import annotations

import json
import logging
from typing import Any, Protocol

log = logging.getLogger("calsync.hub")


class Push:
    """One push, encoded once for all its receivers.

    `text` is the JSON frame. `wire` is free for the transport to cache the bytes it
    derives from `text` (a WebSocket frame header and payload), so a push to a thousand
    members is framed once, not a thousand times.
    """

    __slots__ = ("text", "wire")

    def __init__(self, text: str) -> None:
        self.text = text
        self.wire: bytes | None = None


class Member(Protocol):
    def send(self, push: Push) -> None: ...

    def close(self, code: int | None = None, reason: str | None = None) -> None: ...


def encode_frame(event: str, data: Any, message_id: Any = None) -> str:
    """One wire frame: `{"event", "data"}`, plus the `id` of the message it answers."""
    frame = {"event": event, "data": data}
    if message_id is not None:
        frame["id"] = message_id
    return json.dumps(frame, ensure_ascii=False)


class Hub:
    def __init__(self) -> None:
        self._members: set[Member] = set()
        self._rooms: dict[str, set[Member]] = {}

    # membership
    def add(self, member: Member) -> None:
        self._members.add(member)

    def remove(self, member: Member) -> None:
        """Forget a closed connection: out of every room."""
        self._members.discard(member)
        for room in list(self._rooms):
            self.leave(room, member)

    def join(self, room: str, member: Member) -> None:
        self._rooms.setdefault(room, set()).add(member)

    def leave(self, room: str, member: Member) -> None:
        members = self._rooms.get(room)
        if members is not None:
            members.discard(member)
            if not members:
                del self._rooms[room]

    def close_room(self, room: str) -> None:
        """Everyone leaves `room` (its department is gone)."""
        self._rooms.pop(room, None)

    def members(self, room: str | None = None) -> int:
        return len(self._members if room is None else self._rooms.get(room, ()))

    # pushes
    def broadcast(self, room: str, event: str, data: Any) -> None:
        """Push to every member of `room`."""
        self._send_all(self._rooms.get(room, ()), Push(encode_frame(event, data)))

    def broadcast_all(self, event: str, data: Any) -> None:
        """Push to every connection, in a room or not."""
        self._send_all(self._members, Push(encode_frame(event, data)))

    def _send_all(self, members: Any, push: Push) -> None:
        for member in list(members):
            try:
                member.send(push)
            except Exception:
                # A client that missed a push must not go on as if it had not: close it, so
                # it reconnects and syncs again.
                log.warning("closing a connection that failed to take a push", exc_info=True)
                self.remove(member)
                self._close(member, 1011, "push failed")

    def close_all(self, code: int, reason: str) -> None:
        """Close every connection (server shutdown: 1001 going away)."""
        for member in list(self._members):
            self._close(member, code, reason)
            self.remove(member)

    @staticmethod
    def _close(member: Member, code: int, reason: str) -> None:
        try:
            member.close(code, reason)
        except Exception:
            log.debug("connection failed while closing", exc_info=True)
