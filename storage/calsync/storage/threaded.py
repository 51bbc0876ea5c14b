"""Base for backends whose driver blocks (sqlite3, file I/O, boto3).

Their calls run on the backend's own bounded thread pool so the IOLoop never waits on I/O.
With one worker (the default) calls run one at a time in the order they were made, which
is what keeps a backend's writes — and so the pushes that follow them — in order.
"""
from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, TypeVar

from calsync.storage.base import BackendOptions, Storage

T = TypeVar("T")


class ThreadedStorage(Storage):
    workers = 1

    def __init__(self, options: BackendOptions) -> None:
        super().__init__(options)
        self._executor = ThreadPoolExecutor(self.workers, thread_name_prefix=f"calsync-{type(self).__name__}")

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """Run a blocking call on this backend's threads and wait for it without blocking."""
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    def shutdown_threads(self) -> None:
        self._executor.shutdown(wait=True)
