"""Data stored before the change feed existed gets a feed, and clients see every event in it."""
from __future__ import annotations

import json
import sqlite3

from calsync.storage.dynamodb import to_item
from calsync.storage.feed import Cursor
from calsync.storage.jsonfile import JsonOptions, JsonStorage
from calsync.storage.sqlite import SqliteOptions, SqliteStorage
from tests.backends import dynamo_options, make_dynamo

DEPARTMENT = {"id": "d1", "name": "개발팀", "description": "", "created_at": "2024-01-01T00:00:00.000Z",
              "updated_at": "2024-01-01T00:00:00.000Z"}
EVENTS = [{"id": f"e{n}", "department_id": "d1", "event_date": "2024-01-20", "title": f"회의 {n}", "description": "",
           "time": "", "url": "", "created_at": f"2024-01-0{n}T00:00:00.000Z",
           "last_modified": f"2024-01-0{n}T00:00:00.000Z", "version": 1} for n in (2, 1)]


async def check_feed_started(storage) -> None:
    state = await storage.feed_state("d1")
    assert state.seq == 2 and state.epoch
    page = await storage.read_feed("d1")
    assert {(e.id, e.seq) for e in page.events} == {("e1", 1), ("e2", 2)}  # numbered in creation order
    assert (await storage.create_event("d1", {"event_date": "2024-01-21", "title": "새"})).seq == 3
    page = await storage.read_feed("d1", Cursor(2, state.epoch))
    assert [e.title for e in page.events] == ["새"]


async def test_sqlite_database_from_before_the_feed(tmp_path):
    path = tmp_path / "old.db"
    db = sqlite3.connect(path)
    db.executescript("""
        CREATE TABLE departments (id TEXT PRIMARY KEY, name TEXT NOT NULL UNIQUE, description TEXT NOT NULL,
                                  created_at TEXT NOT NULL, updated_at TEXT NOT NULL);
        CREATE TABLE events (id TEXT PRIMARY KEY, department_id TEXT NOT NULL REFERENCES departments(id) ON DELETE CASCADE,
                             event_date TEXT NOT NULL, title TEXT NOT NULL, description TEXT NOT NULL, time TEXT NOT NULL,
                             url TEXT NOT NULL, created_at TEXT NOT NULL, last_modified TEXT NOT NULL, version INTEGER NOT NULL);
    """)
    db.execute("INSERT INTO departments VALUES (:id, :name, :description, :created_at, :updated_at)", DEPARTMENT)
    db.executemany("INSERT INTO events VALUES (:id, :department_id, :event_date, :title, :description, :time, :url,"
                   " :created_at, :last_modified, :version)", EVENTS)
    db.commit()
    db.close()
    storage = SqliteStorage(SqliteOptions(path=path))
    await storage.open()
    try:
        await check_feed_started(storage)
    finally:
        await storage.close()


async def test_json_folder_from_before_the_feed(tmp_path):
    folder = tmp_path / "json"
    (folder / "events").mkdir(parents=True)
    (folder / "departments.json").write_text(json.dumps({"departments": [DEPARTMENT]}), encoding="utf-8")
    (folder / "events" / "d1.json").write_text(json.dumps({"events": EVENTS}), encoding="utf-8")
    storage = JsonStorage(JsonOptions(path=folder))
    await storage.open()
    try:
        epoch = (await storage.feed_state("d1")).epoch
        await check_feed_started(storage)
    finally:
        await storage.close()
    storage = JsonStorage(JsonOptions(path=folder))
    await storage.open()
    try:
        assert (await storage.feed_state("d1")).epoch == epoch  # written down, not made up each start
    finally:
        await storage.close()


async def test_dynamodb_tables_from_before_the_feed(aws_mock):
    storage = make_dynamo(dynamo_options())
    await storage.create_tables()
    storage.client.put_item(TableName=storage.departments_table, Item=to_item(DEPARTMENT))
    storage.client.put_item(TableName=storage.departments_table,
                            Item=to_item({"id": "name#개발팀", "department_id": "d1"}))
    for event in EVENTS:
        storage.client.put_item(TableName=storage.events_table, Item=to_item(event))
    try:
        await check_feed_started(storage)
    finally:
        await storage.close()
