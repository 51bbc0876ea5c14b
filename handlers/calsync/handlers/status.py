"""`/`, `/health` (the process runs) and `/ready` (storage answers, decided within `ready_timeout`, 5 s)."""
from __future__ import annotations

import asyncio

from calsync.handlers.base import ApiHandler
from calsync.storage.errors import StorageUnavailable


class StatusHandler(ApiHandler):
    """Open with auth on too: load balancers and people check these without a token."""

    open_access = True


class RootHandler(StatusHandler):
    def get(self) -> None:
        self.reply(
            status="running",
            message="캘린더 동기화 서버가 실행 중입니다.",
            version=self.context.version,
            storage=self.context.backend_name,
        )


class HealthHandler(StatusHandler):
    def get(self) -> None:
        self.reply(status="ok")


class ReadyHandler(StatusHandler):
    async def get(self) -> None:
        try:
            await asyncio.wait_for(self.calendar.ping(), self.context.ready_timeout)
        except (asyncio.TimeoutError, StorageUnavailable):
            raise StorageUnavailable() from None
        # A shared broker that is down costs no change (the feed fills in), so it never fails
        # readiness; it is said, for monitoring.
        self.reply(status="ready", storage=self.context.backend_name, broker=self.broker.status())


routes = [
    (r"/", RootHandler),
    (r"/health", HealthHandler),
    (r"/ready", ReadyHandler),
]
