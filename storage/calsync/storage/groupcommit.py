"""Group commit for SQLite: writes that arrive while a commit is being made durable wait and
are committed together by the next one, each acknowledged only once its commit is durable.

A commit with `synchronous=FULL` costs an fsync, about a millisecond or more; one per write
caps a server at about a thousand writes a second however many clients write. Here every
write queued meanwhile joins one transaction, each inside its own SAVEPOINT: a write that
fails (a 404, a 412, a bug) is rolled back alone and the others commit; a storage failure
(locked past the busy timeout, disk full, the COMMIT itself) fails the whole group, and none
of it stays. Writes run in the order they were queued, so each sees the ones before it.

One group runs per turn of the backend's single worker thread; reads queued meanwhile run
between groups, so a stream of writes never starves them.
"""
from __future__ import annotations

import asyncio
import logging
import sqlite3
import threading
from concurrent.futures import Executor
from typing import Any, Callable

from calsync.storage.errors import StorageUnavailable

log = logging.getLogger("calsync.storage")
Write = Callable[[sqlite3.Connection], Any]
#: At most this many writes share one commit, so one group's answers are not held long.
MAX_GROUP = 256


class GroupCommit:
    def __init__(self, executor: Executor, connection: Callable[[], sqlite3.Connection | None],
                 unavailable: Callable[[BaseException], bool]) -> None:
        self._executor = executor
        self._connection = connection
        self._unavailable = unavailable  # the storage's: which errors are an outage
        self._lock = threading.Lock()
        self._queued: list[tuple[Write, asyncio.Future, asyncio.AbstractEventLoop]] = []
        self._scheduled = False
        self.groups = 0  # commits made, and writes in them: for benchmarks and tests
        self.writes = 0

    async def write(self, fn: Write) -> Any:
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        with self._lock:
            self._queued.append((fn, future, loop))
            schedule = not self._scheduled
            self._scheduled = True
        if schedule:
            self._submit()
        return await future

    def _submit(self) -> None:
        """Run the next group on the worker thread; if it cannot run (the executor was shut
        down), every queued write is answered now instead of waiting forever."""
        try:
            self._executor.submit(self._run_group)
        except RuntimeError:
            with self._lock:
                jobs, self._queued, self._scheduled = self._queued, [], False
            _settle_all(jobs, [(None, StorageUnavailable()) for _ in jobs])

    # -- on the worker thread ---------------------------------------------------------------
    def _run_group(self) -> None:
        with self._lock:
            jobs, self._queued = self._queued[:MAX_GROUP], self._queued[MAX_GROUP:]
        try:
            outcomes = self._commit(jobs)
        except BaseException as exc:
            # Nothing of the group was kept, and every write in it is still answered. An
            # outage (locked past busy_timeout, disk full) is expected; anything else (a
            # corrupt file's DatabaseError, a failed ROLLBACK, a bug) is logged in full.
            if not self._unavailable(exc):
                log.exception("a group commit failed; its %d writes answered as storage_unavailable", len(jobs))
            outcomes = [(None, StorageUnavailable()) for _ in jobs]
        _settle_all(jobs, outcomes)
        with self._lock:
            if not self._queued:
                self._scheduled = False
                return
        self._submit()  # after whatever reads queued meanwhile

    def _commit(self, jobs: list[tuple[Write, asyncio.Future, asyncio.AbstractEventLoop]]) -> list[tuple[Any, BaseException | None]]:
        db = self._connection()
        if db is None:
            return [(None, StorageUnavailable()) for _ in jobs]
        db.execute("BEGIN IMMEDIATE")
        outcomes: list[tuple[Any, BaseException | None]] = []
        try:
            for fn, _, _ in jobs:
                db.execute("SAVEPOINT write")
                try:
                    result = fn(db)
                except Exception as exc:
                    if self._unavailable(exc):
                        raise  # storage itself failed: the whole group goes
                    # this write's own answer (NotFound, VersionConflict, a bug)
                    db.execute("ROLLBACK TO write")
                    db.execute("RELEASE write")
                    outcomes.append((None, exc))
                    continue
                db.execute("RELEASE write")
                outcomes.append((result, None))
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise
        self.groups += 1
        self.writes += len(jobs)
        return outcomes


def _settle_all(jobs: list[tuple[Write, asyncio.Future, asyncio.AbstractEventLoop]],
                outcomes: list[tuple[Any, BaseException | None]]) -> None:
    for (_, future, loop), (result, error) in zip(jobs, outcomes, strict=True):
        try:
            loop.call_soon_threadsafe(_settle, future, result, error)
        except RuntimeError:
            pass  # its event loop is closed: nobody waits for the answer any more


def _settle(future: asyncio.Future, result: Any, error: BaseException | None) -> None:
    if future.cancelled():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)
