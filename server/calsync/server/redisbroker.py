"""`broker: redis`: rooms shared by every process through Redis (contract 12.3, 12.4).

Each process keeps its own `Hub` for its own connections. A stored change is delivered to
the local hub and published on Redis (`<prefix>:room:<department>` or `<prefix>:departments`),
and every other process delivers what it hears to its hub. Redis only carries hints: the
feed's seq decides order and completeness (Centrifugo's recovery by offset and epoch).

Per room, each process delivers pushes strictly in seq order from a cursor (the seq up to
which the room has been served). A push past the next seq waits; a gap that a hint does not
fill soon is filled from the feed: one incremental read from the cursor delivers every change
up to the feed's committed position, and whatever was waiting up to there is covered by it.
A push at or below the cursor is a duplicate and is dropped. Every `sweep_seconds` each room
in use is checked against the feed's position, so a message Redis dropped, or everything
missed while Redis was down, is delivered without any client action. Writes never wait for
Redis: publishing is best effort.

Presence: each process keeps one Redis hash of its rooms' connection counts by subject,
expiring `presence_ttl` seconds after its last refresh, so a process that dies stops
counting by itself.
"""
from __future__ import annotations

import asyncio
import json
import logging
import os
import uuid
from dataclasses import dataclass, field
from typing import Any

import redis.asyncio as aioredis
import redis.exceptions

from calsync.server.hub import Hub, Member, Push, encode_frame, framed, presence_answer
from calsync.storage.base import Storage
from calsync.storage.errors import CalsyncError
from calsync.storage.feed import Change, Cursor, FeedPage, Kind

log = logging.getLogger("calsync.broker")

#: How long a push past the next seq waits for the missing ones before the feed fills them.
FILL_DELAY = 0.25
RECONNECT_SECONDS = 1.0


@dataclass
class RoomCursor:
    """Where one room's pushes stand in this process."""

    seq: int | None = None  # served up to here; None until the first member's catch-up says
    epoch: str = ""
    waiting: dict[int, Push] = field(default_factory=dict)  # seq -> push past the next one
    filling: bool = False


def entry_pushes(page: FeedPage) -> list[Push]:
    """A feed page as the pushes its changes were (a first version is a create)."""
    pushes = []
    for event in page.events:
        name = "event_created" if event.version == 1 else "event_updated"
        pushes.append(Push(encode_frame(name, event.to_dict()), event.seq))
    for tombstone in page.deleted:
        data = {"id": tombstone.id, "department_id": page.department_id, "seq": tombstone.seq}
        pushes.append(Push(encode_frame("event_deleted", data), tombstone.seq))
    return sorted(pushes, key=lambda push: push.seq)


class RedisBroker(Hub):
    def __init__(self, storage: Storage, url: str, prefix: str = "calsync", sweep_seconds: float = 2.0,
                 presence_ttl: float = 40.0) -> None:
        super().__init__()
        self.storage = storage
        self.url = url
        self.prefix = prefix
        self.sweep_seconds = sweep_seconds
        self.presence_ttl = presence_ttl
        self.origin = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self._redis: aioredis.Redis | None = None
        self._up = False
        self._cursors: dict[str, RoomCursor] = {}
        #: Departments as this process last told its clients: department changes have no
        #: feed, so what Redis lost while it was away is found by comparing with storage.
        self._departments: dict[str, tuple[str, str, str]] = {}
        self._tasks: list[asyncio.Task] = []
        self._presence_dirty = asyncio.Event()

    # -- life cycle -----------------------------------------------------------------------
    async def start(self) -> None:
        try:
            self._departments = {d.id: _shown(d.to_dict()) for d in await self.storage.list_departments()}
        except CalsyncError:
            pass  # storage answered at open; if not now, the first catch-up learns them
        self._redis = aioredis.from_url(self.url, socket_connect_timeout=2, socket_timeout=5,
                                        health_check_interval=10)
        try:
            await self._redis.ping()
            self._up = True
        except (redis.exceptions.RedisError, OSError) as exc:
            log.warning("Redis at %s is not reachable yet (%s): pushes reach this process's clients only until it"
                        " is; nothing is lost meanwhile (the feed fills it in)", self.url, exc)
        self._tasks = [asyncio.create_task(self._listen(), name="calsync-redis-listen"),
                       asyncio.create_task(self._sweep(), name="calsync-redis-sweep"),
                       asyncio.create_task(self._advertise(), name="calsync-redis-presence")]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        if self._redis is not None:
            try:
                await asyncio.wait_for(self._redis.delete(self._presence_key(self.origin)), 1)
            except (redis.exceptions.RedisError, OSError, asyncio.TimeoutError):
                pass
            await self._redis.aclose()

    def status(self) -> str:
        return "up" if self._up else "down"

    # -- publishing -----------------------------------------------------------------------
    def publish(self, change: Change) -> None:
        room, push = framed(change)
        if room is None:
            deleted = change.kind == Kind.DEPARTMENT_DELETED
            self._note_department(change.record.id, None if deleted else change.record.to_dict())
            self.deliver_department(change.record.id, push, deleted)
            message = {"origin": self.origin, "department": change.record.id, "text": push.text, "deleted": deleted}
            channel = f"{self.prefix}:departments"
        else:
            self.offer(room, push)
            message = {"origin": self.origin, "room": room, "seq": push.seq, "text": push.text}
            channel = f"{self.prefix}:room:{room}"
        asyncio.get_running_loop().create_task(self._send(channel, message))

    async def _send(self, channel: str, message: dict[str, Any]) -> None:
        if self._redis is None:
            return
        try:
            await self._redis.publish(channel, json.dumps(message, ensure_ascii=False))
        except (redis.exceptions.RedisError, OSError) as exc:
            self._went_down(exc)
        else:
            self._went_up()

    def _went_up(self) -> None:
        """Any call that worked says Redis answers (a pooled connection the restart broke
        fails once, then the pool makes a new one)."""
        if not self._up:
            log.info("Redis at %s answers again", self.url)
            self._up = True

    def _went_down(self, exc: BaseException) -> None:
        if self._up:
            log.warning("Redis at %s stopped answering (%s); other processes' pushes come from the feed until"
                        " it is back", self.url, exc)
        self._up = False

    # -- delivering in seq order ------------------------------------------------------------
    def offer(self, room: str, push: Push) -> None:
        """Deliver `push` to the room when it is the next seq; hold it when it is past that;
        drop it when the room was served past it already."""
        if room not in self._rooms and room not in self._joining:
            self._cursors.pop(room, None)  # nobody here listens: nothing to keep in order
            return
        cursor = self._cursors.setdefault(room, RoomCursor())
        if cursor.seq is not None and push.seq <= cursor.seq:
            return
        cursor.waiting[push.seq] = push
        self._release(room, cursor)
        if cursor.waiting and cursor.seq is not None:
            self._fill_soon(room)

    def _release(self, room: str, cursor: RoomCursor) -> None:
        if cursor.seq is None:
            return  # the first member's catch-up has not said where the room starts
        while cursor.seq + 1 in cursor.waiting:
            cursor.seq += 1
            self.deliver(room, cursor.waiting.pop(cursor.seq))
        for seq in [seq for seq in cursor.waiting if seq <= cursor.seq]:
            del cursor.waiting[seq]

    def go_live(self, room: str, member: Member, after_seq: int) -> None:
        cursor = self._cursors.setdefault(room, RoomCursor())
        if cursor.seq is None:
            cursor.seq = after_seq  # the room starts where its first member's catch-up ended
        super().go_live(room, member, after_seq)
        self._release(room, cursor)  # also drops what waited at or below it
        if cursor.waiting:
            self._fill_soon(room)
        self._presence_dirty.set()

    def leave(self, room: str, member: Member) -> None:
        super().leave(room, member)
        if room not in self._rooms and room not in self._joining:
            self._cursors.pop(room, None)
        self._presence_dirty.set()

    def remove(self, member: Member) -> None:
        super().remove(member)
        self._presence_dirty.set()

    def close_room(self, room: str) -> None:
        super().close_room(room)
        self._cursors.pop(room, None)

    def _fill_soon(self, room: str) -> None:
        cursor = self._cursors.get(room)
        if cursor is None or cursor.filling:
            return
        cursor.filling = True
        asyncio.get_running_loop().call_later(FILL_DELAY, lambda: asyncio.ensure_future(self.fill(room)))

    async def fill(self, room: str) -> None:
        """Deliver from the feed everything the room missed up to the feed's position."""
        cursor = self._cursors.get(room)
        if cursor is None:
            return
        try:
            while cursor.seq is not None and self._cursors.get(room) is cursor:
                if not cursor.epoch:
                    cursor.epoch = (await self.storage.feed_state(room)).epoch
                page = await self.storage.read_feed(room, Cursor(cursor.seq, cursor.epoch))
                if self._cursors.get(room) is not cursor or cursor.seq is None:
                    return
                if page.reset:
                    # The feed began anew (a migration) or forgot past the cursor: the room's
                    # clients must sync again.
                    self._reset_room(room)
                    return
                delivered = False
                for push in entry_pushes(page):
                    if push.seq > cursor.seq:
                        self.deliver(room, push)
                        delivered = True
                if delivered:
                    self._filled()
                cursor.seq = max(cursor.seq, page.seq)
                self._release(room, cursor)
                if not page.more:
                    break
        except CalsyncError as exc:
            log.warning("filling room %s from the feed failed (%s); trying again", room, exc.code)
        finally:
            cursor.filling = False
        if cursor.waiting and self._cursors.get(room) is cursor:
            self._fill_soon(room)

    def _reset_room(self, room: str) -> None:
        for member in list(self._rooms.get(room, ())):
            self._close(member, 1013, "feed reset: reconnect and sync")
            self.remove(member)
        self._cursors.pop(room, None)

    async def _sweep(self) -> None:
        """Every room in use, against the feed: what no hint brought is delivered anyway."""
        while True:
            await asyncio.sleep(self.sweep_seconds)
            try:
                await self._sweep_once()
            except Exception:
                log.exception("checking rooms against the feed failed; trying again")

    async def _sweep_once(self) -> None:
        for room, cursor in list(self._cursors.items()):
            if cursor.seq is None or cursor.filling:
                continue
            try:
                state = await self.storage.feed_state(room)
            except CalsyncError:
                continue
            if state.seq > cursor.seq or (cursor.epoch and state.epoch != cursor.epoch):
                cursor.filling = True
                await self.fill(room)

    # -- hearing other processes ----------------------------------------------------------
    async def _listen(self) -> None:
        while True:
            try:
                assert self._redis is not None
                pubsub = self._redis.pubsub(ignore_subscribe_messages=True)
                await pubsub.psubscribe(f"{self.prefix}:room:*", f"{self.prefix}:departments")
                self._went_up()
                for room in list(self._cursors):  # whatever was missed meanwhile
                    self._fill_soon(room)
                await self._catch_up_departments()
                async for message in pubsub.listen():
                    self._heard(message)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # whatever the connection did: try again, never give up
                self._went_down(exc)
                await asyncio.sleep(RECONNECT_SECONDS)

    def _heard(self, message: dict[str, Any]) -> None:
        try:
            body = json.loads(message["data"])
        except (ValueError, KeyError, TypeError):
            return
        if not isinstance(body, dict) or body.get("origin") == self.origin:
            return
        text = body.get("text")
        if not isinstance(text, str):
            return
        if "room" in body and isinstance(body.get("seq"), int):
            self.offer(str(body["room"]), Push(text, body["seq"]))
        elif "department" in body:
            department_id, deleted = str(body["department"]), bool(body.get("deleted"))
            try:
                record = None if deleted else json.loads(text)["data"]
            except (ValueError, KeyError, TypeError):
                return
            self._note_department(department_id, record)
            self.deliver_department(department_id, Push(text), deleted)

    def _note_department(self, department_id: str, record: dict[str, Any] | None) -> None:
        if record is None:
            self._departments.pop(department_id, None)
        else:
            self._departments[department_id] = _shown(record)

    async def _catch_up_departments(self) -> None:
        """After Redis was away: push the department changes no message brought."""
        try:
            now = {d.id: d for d in await self.storage.list_departments()}
        except CalsyncError:
            return
        for department_id in list(self._departments.keys() - now.keys()):
            self._note_department(department_id, None)
            self.deliver_department(department_id, Push(encode_frame("department_deleted", {"id": department_id})),
                                    True)
        for department_id, department in now.items():
            shown = self._departments.get(department_id)
            if shown != _shown(department.to_dict()):
                name = "department_created" if shown is None else "department_updated"
                self._note_department(department_id, department.to_dict())
                self.deliver_department(department_id, Push(encode_frame(name, department.to_dict())), False)

    # -- presence -------------------------------------------------------------------------
    def _presence_key(self, origin: str) -> str:
        return f"{self.prefix}:presence:{origin}"

    async def _advertise(self) -> None:
        """Keep this process's counts in Redis: on every change (at most twice a second) and
        before they expire."""
        while True:
            try:
                await asyncio.wait_for(self._presence_dirty.wait(), self.presence_ttl / 3)
            except asyncio.TimeoutError:
                pass
            self._presence_dirty.clear()
            if self._redis is None:
                continue
            key = self._presence_key(self.origin)
            counts: dict[Any, Any] = {room: json.dumps(self.subjects(room)) for room in self._rooms}
            try:
                async with self._redis.pipeline(transaction=True) as pipe:
                    pipe.delete(key)
                    if counts:
                        pipe.hset(key, mapping=counts)
                        pipe.expire(key, int(self.presence_ttl))
                    await pipe.execute()
            except Exception as exc:
                self._went_down(exc)
            else:
                self._went_up()
            await asyncio.sleep(0.5)

    async def presence(self, department_id: str) -> dict[str, Any]:
        local = self.subjects(department_id)
        if self._redis is None or not self._up:
            return presence_answer(department_id, [local])
        others: list[dict[str, int]] = []
        try:
            async for key in self._redis.scan_iter(match=self._presence_key("*"), count=100):
                name = key.decode() if isinstance(key, bytes) else key
                if name == self._presence_key(self.origin):
                    continue
                value = await self._redis.hget(name, department_id)
                if value:
                    others.append(json.loads(value))
        except (redis.exceptions.RedisError, OSError) as exc:
            self._went_down(exc)
        return presence_answer(department_id, [local, *others])


def _shown(record: dict[str, Any]) -> tuple[str, str, str]:
    """What clients see of a department (its feed position moves with every event)."""
    return record.get("name", ""), record.get("description", ""), record.get("updated_at", "")
