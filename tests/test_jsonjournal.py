"""The json backend's journal: appends instead of rewrites, folded into the department's file
when long, and every crash point leaves a store that loads with everything acknowledged."""
from __future__ import annotations

import contextlib
from typing import AsyncIterator

import pytest

from calsync.storage import jsonfile
from calsync.storage.errors import StorageSetupError
from calsync.storage.jsonfile import JsonOptions, JsonStorage


@contextlib.asynccontextmanager
async def opened(folder) -> AsyncIterator[JsonStorage]:
    storage = JsonStorage(JsonOptions(path=folder))
    await storage.open()
    try:
        yield storage
    finally:
        await storage.close()


async def fill(folder, creates: int) -> tuple[str, list[str]]:
    async with opened(folder) as storage:
        department = (await storage.create_department("개발팀")).record
        ids = [(await storage.create_event(department.id, {"event_date": "2024-01-20", "title": f"회의 {i}"})).record.id
               for i in range(creates)]
        return department.id, ids


async def test_writes_append_to_the_journal_and_compaction_folds_it_in(tmp_path, monkeypatch):
    monkeypatch.setattr(jsonfile, "COMPACT_LINES", 5)
    folder = tmp_path / "json"
    async with opened(folder) as storage:
        department = (await storage.create_department("개발팀")).record
        file = folder / "events" / f"{department.id}.json"
        journal = folder / "events" / f"{department.id}.journal"
        first = (await storage.create_event(department.id, {"event_date": "2024-01-20", "title": "하나"})).record
        assert "하나" not in file.read_text(encoding="utf-8") and "하나" in journal.read_text(encoding="utf-8")
        await storage.update_event(first.id, {"title": "고침"})
        for i in range(10):
            await storage.create_event(department.id, {"event_date": "2024-01-21", "title": f"일정 {i}"})
        await storage.delete_event(first.id)
        assert len(journal.read_text(encoding="utf-8").splitlines()) < 5  # folded in at least once
        state = await storage.feed_state(department.id)
    async with opened(folder) as again:
        events = await again.list_events(department.id)
        assert sorted(e.title for e in events) == sorted(f"일정 {i}" for i in range(10))
        page = await again.read_feed(department.id)
        assert (await again.feed_state(department.id)) == state and page.seq == 13


async def test_a_line_cut_short_by_a_crash_is_dropped_and_the_next_write_is_whole(tmp_path):
    folder = tmp_path / "json"
    department_id, ids = await fill(folder, 3)
    journal = folder / "events" / f"{department_id}.journal"
    journal.write_bytes(journal.read_bytes() + b'{"epoch": "x", "seq": 4, "put": {"id": "half')  # kill -9 mid-append
    async with opened(folder) as storage:
        assert sorted(e.id for e in await storage.list_events(department_id)) == sorted(ids)
        made = (await storage.create_event(department_id, {"event_date": "2024-01-22", "title": "다음"})).record
        assert made.seq == 4
    async with opened(folder) as again:
        assert len(await again.list_events(department_id)) == 4


async def test_a_crash_between_compaction_and_emptying_the_journal_repeats_nothing(tmp_path, monkeypatch):
    folder = tmp_path / "json"
    department_id, ids = await fill(folder, 4)
    journal = folder / "events" / f"{department_id}.journal"
    kept = journal.read_bytes()
    monkeypatch.setattr(jsonfile, "COMPACT_LINES", 0)  # the next write compacts
    async with opened(folder) as storage:
        await storage.create_event(department_id, {"event_date": "2024-01-22", "title": "다섯"})
    journal.write_bytes(kept)  # as if the crash came before the journal was emptied
    monkeypatch.setattr(jsonfile, "COMPACT_LINES", 1000)
    async with opened(folder) as again:
        events = await again.list_events(department_id)
        assert len(events) == 5 and (await again.feed_state(department_id)).seq == 5


async def test_a_broken_line_inside_the_journal_refuses_to_start(tmp_path):
    folder = tmp_path / "json"
    department_id, _ = await fill(folder, 3)
    journal = folder / "events" / f"{department_id}.journal"
    lines = journal.read_bytes().splitlines(keepends=True)
    journal.write_bytes(lines[0] + b"not json\n" + b"".join(lines[2:]))
    with pytest.raises(StorageSetupError, match="line 2 is not a journal entry"):
        async with opened(folder):
            pass
