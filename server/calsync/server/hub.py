"""Where a stored change becomes a push: the `Broker` interface and the in-process `Hub`.

Handlers hand every `Change` a storage write returned to `Broker.publish`; the broker
alone decides the event name, the payload and who receives it. The `Hub` does that for
the connections of this process. A broker for several processes (pub/sub) can implement
the same interface and deliver through a `Hub` in each.

The hub knows nothing of HTTP or Tornado: a member is anything with `send(push)` and
`close(code, reason)`. A push is encoded once and written to every member; a member that
fails to take it is closed without stopping the others. How a push becomes bytes on a
socket is the transport's business (see `Push.wire`).
"""
from __future__ import annotations

import abc
import json
import logging
import time
from collections import Counter
from typing import Any, Callable, Iterable, Protocol

from calsync.storage.feed import Change, Kind

log = logging.getLogger("calsync.hub")


class Push:
    """One push, encoded once for all its receivers.

    `text` is the JSON frame (str, or UTF-8 bytes when it was built as bytes) and `seq` the
    feed position of its change (0 when it has none).
    `wire` is free for the transport to cache the bytes it derives from `text` (a WebSocket
    frame), so a push to a thousand members is framed once, not a thousand times.
    """

    __slots__ = ("text", "seq", "wire")

    def __init__(self, text: str | bytes, seq: int = 0) -> None:
        self.text = text
        self.seq = seq
        self.wire: bytes | None = None


class Member(Protocol):
    """A connection as the hub and the heartbeat (`server/heartbeat.py`) see it."""

    #: When the last pong (or any frame) arrived, on `time.monotonic()`.
    heard_at: float
    @property
    def sub(self) -> str:
        """Who it is, for presence: the token's subject ("-" with auth off)."""

    def send(self, push: Push) -> None: ...

    def send_ping(self) -> None: ...

    def hears(self, department_id: str) -> bool:
        """Whether pushes about this department may reach it (what its token may read)."""

    def close(self, code: int | None = None, reason: str | None = None) -> None: ...


def encode_frame(event: str, data: Any, message_id: Any = None) -> str:
    """One wire frame: `{"event", "data"}`, plus the `id` of the message it answers."""
    frame = {"event": event, "data": data}
    if message_id is not None:
        frame["id"] = message_id
    return json.dumps(frame, ensure_ascii=False)


def push_of(change: Change) -> tuple[str | None, str, dict[str, Any]]:
    """The room a change goes to (None: every connection), its event name and its payload."""
    if change.kind == Kind.DEPARTMENT_DELETED:
        return None, change.kind, {"id": change.record.id}
    if change.kind == Kind.EVENT_DELETED:
        event = change.record
        return event.department_id, change.kind, {"id": event.id, "department_id": event.department_id,
                                                  "seq": change.seq}
    if change.kind in (Kind.DEPARTMENT_CREATED, Kind.DEPARTMENT_UPDATED):
        return None, change.kind, change.record.to_dict()
    return change.department_id, change.kind, change.record.to_dict()


def framed(change: Change) -> tuple[str | None, Push]:
    """The room a change goes to (None: every connection) and its push, encoded once."""
    room, event, data = push_of(change)
    return room, Push(encode_frame(event, data), change.seq)


class Broker(abc.ABC):
    """What handlers see of the push side: publish changes, manage who listens where."""

    @abc.abstractmethod
    def publish(self, change: Change) -> None:
        """Push a stored change to those who should hear of it, in the order published."""

    @abc.abstractmethod
    def add(self, member: Member) -> None:
        """A new connection: it hears department-level changes from now on."""

    @abc.abstractmethod
    def remove(self, member: Member) -> None:
        """A connection is gone: it leaves every room."""

    @abc.abstractmethod
    def join(self, room: str, member: Member) -> None:
        """Start joining `room`: its pushes are held for `member` until `go_live`."""

    @abc.abstractmethod
    def go_live(self, room: str, member: Member, after_seq: int) -> None:
        """Finish joining: send the held pushes with seq above `after_seq` (the rest were in
        the catch-up the member was just sent), then every push as it comes."""

    @abc.abstractmethod
    def leave(self, room: str, member: Member) -> None:
        """Stop hearing `room` (joined or still joining)."""

    @abc.abstractmethod
    def rooms_of(self, member: Member) -> list[str]:
        """The rooms `member` hears."""

    @abc.abstractmethod
    def close_all(self, code: int, reason: str) -> None:
        """Close every connection (server shutdown: 1001 going away)."""

    @abc.abstractmethod
    def members(self, room: str | None = None) -> int:
        """How many connections this process has, or how many are in `room`."""

    @abc.abstractmethod
    def room_count(self) -> int:
        """How many rooms have someone in them."""

    @abc.abstractmethod
    async def presence(self, department_id: str) -> dict[str, Any]:
        """Who is in a department's room: `{"department_id", "connections", "members":
        [{"sub", "connections"}]}` (contract 12.4)."""

    def observe_fills(self, callback: Callable[[], None]) -> None:
        """Call `callback()` each time a room is filled from the feed (a shared broker)."""
        self._fill_observer = callback

    _fill_observer: Callable[[], None] | None = None

    def _filled(self) -> None:
        if self._fill_observer is not None:
            self._fill_observer()

    def status(self) -> str:
        """For `/ready`: `local`, or whether a shared broker answers (`up`, `down`)."""
        return "local"

    async def start(self) -> None:
        """Connect what the broker needs; never fails the start (a shared broker may come later)."""

    async def stop(self) -> None:
        """Let go of connections and timers."""

    def observe_fanout(self, callback: Callable[[int, float], None]) -> None:
        """Call `callback(deliveries, seconds)` after each push is handed to its listeners
        (metrics); once per push, not per connection."""
        self._fanout_observer = callback

    _fanout_observer: Callable[[int, float], None] | None = None

    def _on_fanout(self, deliveries: int, seconds: float) -> None:
        if self._fanout_observer is not None:
            self._fanout_observer(deliveries, seconds)


class Hub(Broker):
    def __init__(self) -> None:
        self._members: set[Member] = set()
        self._rooms: dict[str, set[Member]] = {}
        self._joining: dict[str, dict[Member, list[Push]]] = {}  # room -> member -> held pushes
        self._published: dict[str, int] = {}  # room -> seq of the last push published to it
        # room -> member -> seq: pushes up to it were in the member's catch-up, though not yet
        # published when it went live (a store whose reads can overtake its write's answer).
        self._floors: dict[str, dict[Member, int]] = {}

    # membership
    def add(self, member: Member) -> None:
        self._members.add(member)

    def remove(self, member: Member) -> None:
        self._members.discard(member)
        for room in [room for room, members in self._rooms.items() if member in members]:
            self.leave(room, member)
        for room in [room for room, joining in self._joining.items() if member in joining]:
            self.leave(room, member)
        for room in [room for room, floors in self._floors.items() if member in floors]:
            self.leave(room, member)

    def join(self, room: str, member: Member) -> None:
        members = self._rooms.get(room)
        if members is not None:
            members.discard(member)
        self._joining.setdefault(room, {})[member] = []

    def go_live(self, room: str, member: Member, after_seq: int) -> None:
        joining = self._joining.get(room, {})
        held = joining.pop(member, None)
        if not joining:
            self._joining.pop(room, None)
        if held is None:
            return  # left (or the room closed) while joining
        self._rooms.setdefault(room, set()).add(member)
        for push in held:
            if push.seq > after_seq:
                self._send_all((member,), push)
        if after_seq > self._published.get(room, 0):
            self._floors.setdefault(room, {})[member] = after_seq

    def leave(self, room: str, member: Member) -> None:
        members = self._rooms.get(room)
        if members is not None:
            members.discard(member)
            if not members:
                del self._rooms[room]
        for waiting in (self._joining, self._floors):
            by_member = waiting.get(room)
            if by_member is not None:
                by_member.pop(member, None)
                if not by_member:
                    del waiting[room]

    def close_room(self, room: str) -> None:
        """Everyone leaves `room` (its department is gone)."""
        for rooms in (self._rooms, self._joining, self._published, self._floors):
            rooms.pop(room, None)

    def rooms_of(self, member: Member) -> list[str]:
        return [room for room, members in self._rooms.items() if member in members]

    def connections(self) -> list[Member]:
        return list(self._members)

    def members(self, room: str | None = None) -> int:
        return len(self._members if room is None else self._rooms.get(room, ()))

    def room_count(self) -> int:
        return len(self._rooms)

    async def presence(self, department_id: str) -> dict[str, Any]:
        return presence_answer(department_id, [self.subjects(department_id)])

    def subjects(self, room: str) -> dict[str, int]:
        """This process's connections in `room`, by subject."""
        return dict(Counter(member.sub for member in self._rooms.get(room, ())))

    # pushes
    def publish(self, change: Change) -> None:
        room, push = framed(change)
        if room is None:
            self.deliver_department(change.record.id, push, change.kind == Kind.DEPARTMENT_DELETED)
        else:
            self.deliver(room, push)

    def deliver_department(self, department_id: str, push: Push, deleted: bool) -> None:
        """A department-level push: every connection that may read the department hears it."""
        self._send_all([m for m in self._members if m.hears(department_id)], push)
        if deleted:
            self.close_room(department_id)

    def deliver(self, room: str, push: Push) -> None:
        """A push to a room's members, in the order delivered (a broker for several processes
        puts them in seq order first)."""
        self._published[room] = push.seq
        members: Iterable[Member] = self._rooms.get(room, ())
        floors = self._floors.get(room)
        if floors:
            members = self._past_floors(room, floors, members, push.seq)
        self._send_all(members, push)
        for held in self._joining.get(room, {}).values():
            held.append(push)

    def _past_floors(self, room: str, floors: dict[Member, int], members: Iterable[Member], seq: int) -> list[Member]:
        """The members to send a push of `seq` to: not those whose catch-up already held it.
        A floor goes once the pushes reach it (they come in seq order)."""
        had = {member for member, floor in floors.items() if seq <= floor}
        for member, floor in list(floors.items()):
            if seq >= floor:
                del floors[member]
        if not floors:
            del self._floors[room]
        return [m for m in members if m not in had]

    def _send_all(self, members: Iterable[Member], push: Push) -> None:
        members = list(members)
        started = time.perf_counter()
        for member in members:
            try:
                member.send(push)
            except Exception:
                # A client that missed a push must not go on as if it had not: close it, so
                # it reconnects and syncs again.
                log.warning("closing a connection that failed to take a push", exc_info=True)
                self.remove(member)
                self._close(member, 1011, "push failed")
        self._on_fanout(len(members), time.perf_counter() - started)

    def close_all(self, code: int, reason: str) -> None:
        for member in list(self._members):
            self._close(member, code, reason)
            self.remove(member)

    @staticmethod
    def _close(member: Member, code: int, reason: str) -> None:
        try:
            member.close(code, reason)
        except Exception:
            log.debug("connection failed while closing", exc_info=True)


def presence_answer(department_id: str, processes: Iterable[dict[str, int]]) -> dict[str, Any]:
    """The `presence` reply from each process's counts by subject."""
    counts: Counter[str] = Counter()
    for subjects in processes:
        counts.update(subjects)
    members = [{"sub": subject, "connections": connections} for subject, connections in sorted(counts.items())]
    return {"department_id": department_id, "connections": sum(counts.values()), "members": members}
