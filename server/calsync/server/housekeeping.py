"""The server's timers: WebSocket heartbeats, and purging what the feed no longer needs.

Expired tombstones and idempotency keys are purged at start and every hour (contract 8.4);
a purge that fails (storage down) is logged and tried again at the next hour.
"""
from __future__ import annotations

import logging
from typing import Callable, Iterable

from tornado.ioloop import PeriodicCallback

from calsync.server.config import ServerConfig, SyncConfig
from calsync.server.heartbeat import Heartbeat, Pingable
from calsync.storage.base import Storage
from calsync.storage.errors import CalsyncError

log = logging.getLogger("calsync")
PURGE_SECONDS = 3600


class Housekeeping:
    def __init__(self, storage: Storage, connections: Callable[[], Iterable[Pingable]], server: ServerConfig,
                 sync: SyncConfig) -> None:
        self.storage = storage
        self.sync = sync
        self.heartbeat = Heartbeat(connections, server.ping_interval, server.ping_timeout)
        self._purger = PeriodicCallback(self.purge, PURGE_SECONDS * 1000)

    async def start(self) -> None:
        await self.purge()
        self.heartbeat.start()
        self._purger.start()

    def stop(self) -> None:
        self.heartbeat.stop()
        self._purger.stop()

    async def purge(self) -> int:
        try:
            purged = await self.storage.purge(self.sync.tombstone_seconds)
        except CalsyncError as exc:
            log.warning("purging expired tombstones failed (%s); trying again in an hour", exc.code)
            return 0
        if purged:
            log.info("purged %d expired tombstones and idempotency keys", purged)
        return purged
