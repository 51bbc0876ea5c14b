"""`/`, `/health` (the process runs) and `/ready` (storage answers, decided within 5 s)."""
from __future__ import annotations

import asyncio

from calsync.handlers.base import ApiHandler
from calsync.storage.errors import StorageUnavailable

READY_TIMEOUT = 5.0


class StatusHandler(ApiHandler):
    """Open with auth on too: load balancers and people check these without a token."""

    open_access = True


class RootHandler(StatusHandler):
    def get(self) -> None:
        self.reply(
            status="running",
            message="캘린더 동기화 서버가 실행 중입니다.",
            version=self.settings["version"],
            storage=self.settings["backend_name"],
        )


class HealthHandler(StatusHandler):
    def get(self) -> None:
        self.reply(status="ok")


class ReadyHandler(StatusHandler):
    async def get(self) -> None:
        try:
            await asyncio.wait_for(self.storage.ping(), self.settings.get("ready_timeout", READY_TIMEOUT))
        except (asyncio.TimeoutError, StorageUnavailable):
            raise StorageUnavailable() from None
        self.reply(status="ready", storage=self.settings["backend_name"])


routes = [
    (r"/", RootHandler),
    (r"/health", HealthHandler),
    (r"/ready", ReadyHandler),
]
