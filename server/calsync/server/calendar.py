"""The calendar service: the one way handlers change anything (write, then publish).

A handler cannot store without publishing, because it never sees storage's write methods:
each write here stores, takes the `Change` storage returned, and hands it to the broker.
Reads pass straight through. (jupyter_server's ContentsManager emits its own events;
python-socketio's `emit` handles locally and publishes in one call.)
"""
from __future__ import annotations

import asyncio
from typing import Any, Mapping, Sequence

from calsync.server.hub import Broker
from calsync.storage.base import Storage
from calsync.storage.feed import Change, IdempotencyKey
from calsync.storage.records import Department, Event


class Calendar:
    def __init__(self, storage: Storage, broker: Broker) -> None:
        self._storage = storage
        self._broker = broker

    # -- writes: stored, then published ---------------------------------------------------
    async def create_department(self, name: str, description: str = "",
                                idempotency: IdempotencyKey | None = None) -> Change:
        return self._publish(await self._storage.create_department(name, description, idempotency=idempotency))

    async def update_department(self, department_id: str, changes: Mapping[str, Any]) -> Change:
        return self._publish(await self._storage.update_department(department_id, changes))

    async def delete_department(self, department_id: str) -> Change:
        return self._publish(await self._storage.delete_department(department_id))

    async def create_event(self, department_id: str, fields: Mapping[str, Any],
                           idempotency: IdempotencyKey | None = None) -> Change:
        return self._publish(await self._storage.create_event(department_id, fields, idempotency))

    async def update_event(self, event_id: str, changes: Mapping[str, Any],
                           if_match: frozenset[int] | None = None) -> Change:
        return self._publish(await self._storage.update_event(event_id, changes, if_match))

    async def delete_event(self, event_id: str, if_match: frozenset[int] | None = None) -> Change:
        return self._publish(await self._storage.delete_event(event_id, if_match))

    def _publish(self, change: Change) -> Change:
        """Hand a stored change to the broker; a replayed create changed nothing and is not
        pushed again.

        The push goes out on the event loop's next turn, so the caller's answer is written
        first and does not wait for a fan-out to a thousand members. Callbacks run in the
        order they were scheduled, and changes come back from storage in the order they were
        stored, so pushes about one department still go out in store order.
        """
        if not change.replayed:
            asyncio.get_running_loop().call_soon(self._broker.publish, change)
        return change

    # -- reads ----------------------------------------------------------------------------
    async def list_departments(self) -> Sequence[Department]:
        return await self._storage.list_departments()

    async def get_department(self, department_id: str) -> Department:
        return await self._storage.get_department(department_id)

    async def get_event(self, event_id: str) -> Event:
        return await self._storage.get_event(event_id)

    async def list_events(self, department_id: str) -> Sequence[Event]:
        return await self._storage.list_events(department_id)

    async def ping(self) -> None:
        await self._storage.ping()
