"""Base for backends whose driver blocks (sqlite3, file I/O, boto3).

Their calls run on the backend's own bounded thread pool so the IOLoop never waits on I/O.
With one worker (the default) calls run one at a time in the order they were made, which
is what keeps a backend's writes — and so the pushes that follow them — in order.
"""
from __future__ import annotations

import asyncio
import logging
import threading
from concurrent.futures import Executor, ThreadPoolExecutor
from typing import Any, Callable, TypeVar

from calsync.storage.base import BackendOptions, Storage
from calsync.storage.errors import CalsyncError, StorageUnavailable

log = logging.getLogger("calsync.storage")

T = TypeVar("T")


class ThreadedStorage(Storage):
    workers = 1

    def __init__(self, options: BackendOptions) -> None:
        super().__init__(options)
        self._executor = ThreadPoolExecutor(self.workers, thread_name_prefix=f"calsync-{type(self).__name__}")

    def unavailable(self, error: BaseException) -> bool:
        """Whether a driver's error means the store cannot answer now (disk full, locked,
        throttled, unreachable): an outage to answer with 503, not a bug. Backends say which."""
        return False

    def guarded(self, fn: Callable[..., T], *args: Any) -> T:
        """Call `fn`, turning the driver's outage errors into `StorageUnavailable`: the one
        place that translates them, for every call of every threaded backend."""
        try:
            return fn(*args)
        except CalsyncError:
            raise
        except Exception as exc:
            if not self.unavailable(exc):
                raise
            log.warning("%s unavailable: %s", type(self).__name__, exc)
            raise StorageUnavailable() from None

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """Run a blocking call on this backend's threads (guarded) and wait for it without
        blocking the event loop."""
        return await asyncio.get_running_loop().run_in_executor(self._executor, self.guarded, fn, *args)

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
