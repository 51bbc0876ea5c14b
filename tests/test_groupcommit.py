"""SQLite group commit: concurrent writes share commits, each keeps its own answer, and a
storage failure fails a whole group without keeping any of it."""
from __future__ import annotations

import asyncio
import sqlite3
from concurrent.futures import ThreadPoolExecutor

import pytest

from calsync.storage.errors import EventNotFound, StorageUnavailable, VersionConflict
from calsync.storage.groupcommit import GroupCommit
from calsync.storage.sqlite import SqliteStorage


@pytest.fixture
def sqlite(storage_factory) -> SqliteStorage:
    return storage_factory("sqlite")


async def test_concurrent_writes_share_commits_and_keep_their_own_answers(sqlite):
    department = (await sqlite.create_department("개발팀")).record
    event = (await sqlite.create_event(department.id, {"event_date": "2024-01-20", "title": "회의"})).record
    groups_before = sqlite._group.groups
    creates = [sqlite.create_event(department.id, {"event_date": "2024-01-21", "title": f"일정 {i}"}) for i in range(40)]
    stale = [sqlite.update_event(event.id, {"title": f"고침 {i}"}, if_versions={event.version}) for i in range(5)]
    missing = [sqlite.delete_event("no-such-event") for _ in range(3)]
    results = await asyncio.gather(*creates, *stale, *missing, return_exceptions=True)
    created, updated, deleted = results[:40], results[40:45], results[45:]
    assert all(not isinstance(r, BaseException) for r in created)
    assert sum(not isinstance(r, BaseException) for r in updated) == 1  # one If-Match winner
    assert all(isinstance(r, VersionConflict) for r in updated if isinstance(r, BaseException))
    assert all(isinstance(r, EventNotFound) for r in deleted)
    assert sqlite._group.groups - groups_before < 48  # fewer commits than writes
    seqs = sorted(change.seq for change in created + [r for r in updated if not isinstance(r, BaseException)])
    assert seqs == list(range(event.seq + 1, event.seq + 42))  # consecutive: failed writes took none
    assert len(await sqlite.list_events(department.id)) == 41


async def test_a_storage_failure_fails_the_whole_group_and_keeps_nothing(sqlite):
    department = (await sqlite.create_department("개발팀")).record
    before = (await sqlite.feed_state(department.id)).seq

    def fill(db):
        db.execute(f"PRAGMA max_page_count = {db.execute('PRAGMA page_count').fetchone()[0]}")

    await sqlite.run(lambda: fill(sqlite._db))
    writes = [sqlite.create_event(department.id, {"event_date": "2024-01-21", "title": "x", "description": "긴" * 5000})
              for _ in range(10)]
    results = await asyncio.gather(*writes, return_exceptions=True)
    assert all(isinstance(r, StorageUnavailable) for r in results)
    await sqlite.run(lambda: sqlite._db.execute("PRAGMA max_page_count = 1073741823"))
    assert (await sqlite.feed_state(department.id)).seq == before
    assert await sqlite.list_events(department.id) == []
    assert (await sqlite.create_event(department.id, {"event_date": "2024-01-21", "title": "복구"})).seq == before + 1


class FailingCommits(sqlite3.Connection):
    """A real SQLite connection whose next COMMITs fail as a corrupt file's would."""

    failures = 0

    def execute(self, sql, *args):
        if sql == "COMMIT" and self.failures:
            self.failures -= 1
            raise sqlite3.DatabaseError("database disk image is malformed")
        return super().execute(sql, *args)


async def test_any_commit_error_answers_every_waiting_write_and_later_writes_go_on(tmp_path):
    db = sqlite3.connect(tmp_path / "g.db", factory=FailingCommits, check_same_thread=False, isolation_level=None)
    db.execute("CREATE TABLE t (v INTEGER)")
    executor = ThreadPoolExecutor(1)
    group = GroupCommit(executor, lambda: db, lambda exc: isinstance(exc, sqlite3.OperationalError))
    try:
        db.failures = 1
        results = await asyncio.wait_for(asyncio.gather(
            *(group.write(lambda c, i=i: c.execute("INSERT INTO t VALUES (?)", (i,))) for i in range(5)),
            return_exceptions=True), 10)
        assert results and all(isinstance(r, StorageUnavailable) for r in results[:1])
        failed = sum(isinstance(r, StorageUnavailable) for r in results)
        assert failed >= 1 and all(isinstance(r, (StorageUnavailable, sqlite3.Cursor)) for r in results)
        assert db.execute("SELECT COUNT(*) FROM t").fetchone()[0] == 5 - failed  # the failed group kept nothing
        await asyncio.wait_for(group.write(lambda c: c.execute("INSERT INTO t VALUES (99)")), 10)
        assert db.execute("SELECT COUNT(*) FROM t WHERE v = 99").fetchone()[0] == 1
        executor.shutdown()
        with pytest.raises(StorageUnavailable):  # answered, not left waiting
            await asyncio.wait_for(group.write(lambda c: c.execute("INSERT INTO t VALUES (100)")), 10)
    finally:
        executor.shutdown()
        db.close()
