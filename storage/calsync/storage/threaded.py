"""Base for backends whose driver blocks (sqlite3, file I/O, boto3).

Their calls run on the backend's own bounded thread pool so the IOLoop never waits on I/O.
With one worker (the default) calls run one at a time in the order they were made, which
is what keeps a backend's writes — and so the pushes that follow them — in order.
"""
from __future__ import annotations

import asyncio
import threading
from concurrent.futures import Executor, ThreadPoolExecutor
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

    async def shutdown_threads(self, *others: Executor) -> None:
        """Stop taking calls, and wait for the ones running, without blocking the event loop.

        A call stuck in a driver (an endpoint that stopped answering) keeps this waiting;
        the CLI bounds the wait at shutdown, so SIGTERM still ends the process.
        """
        for executor in (self._executor, *others):
            executor.shutdown(wait=False, cancel_futures=True)
            await _joined(executor)


async def _joined(executor: Executor) -> None:
    """Wait for an executor's threads on a helper thread that never holds up the exit."""
    loop = asyncio.get_running_loop()
    done = loop.create_future()

    def finish() -> None:
        if not done.done():
            done.set_result(None)

    def join() -> None:
        executor.shutdown(wait=True)
        try:
            loop.call_soon_threadsafe(finish)
        except RuntimeError:
            pass  # the loop is gone: nobody waits any more

    threading.Thread(target=join, name="calsync-close", daemon=True).start()
    await done
