"""Several `calsync serve` processes on one store act as one server (contract 12.1–12.2).

Three real processes share one SQLite file, or one set of DynamoDB tables (moto's server). Writers send random creates, updates and deletes
to random processes while readers follow the feed with cursors through other processes; one
process is paused (SIGSTOP) for 3 s, another is killed (SIGKILL) mid-run. Afterwards every
reader's copy equals a fresh full answer from every live process, every acknowledged write
has its own seq, and concurrent If-Match updates through different processes have one winner.
"""
from __future__ import annotations

import asyncio
import json
import multiprocessing
import random
import signal
import threading
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import pytest

from calsync.storage.sqlite import SqliteOptions, SqliteStorage
from tests.process import ServerProcess, run_cli, write_config

WRITES = 90
TIMEOUT = 15


def call(url: str, method: str = "GET", body: dict | None = None, headers: dict | None = None) -> tuple[int, dict]:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method,
                                     headers={"Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


class Replica:
    """A client's copy of one department, kept by following the feed with cursors."""

    def __init__(self, department: str) -> None:
        self.department = department
        self.events: dict[str, dict] = {}
        self.seq = 0
        self.epoch: str | None = None
        self.served: dict[int, tuple[str, str]] = {}  # seq -> (event id, "put"/"delete"), as served

    def follow(self, base: str) -> None:
        query = f"?since={self.seq}&epoch={self.epoch}&limit=7" if self.epoch else ""
        status, page = call(f"{base}/api/events/{self.department}{query}")
        assert status == 200, page
        if self.epoch is not None:
            assert page["epoch"] == self.epoch and not page["reset"], page
        assert page["seq"] >= self.seq, (page["seq"], self.seq)
        for event in page["events"]:
            self._served(event["seq"], event["id"], "put")
            self.events[event["id"]] = event
        for gone in page["deleted"]:
            self._served(gone["seq"], gone["id"], "delete")
            self.events.pop(gone["id"], None)
        self.seq, self.epoch = page["seq"], page["epoch"]

    def _served(self, seq: int, event_id: str, kind: str) -> None:
        """An entry once served keeps its meaning (contract 12.2)."""
        assert seq > self.seq or self.epoch is None
        assert self.served.setdefault(seq, (event_id, kind)) == (event_id, kind), seq


@pytest.fixture(params=["sqlite", "dynamodb"])
def three_processes(request, tmp_path):
    if request.param == "sqlite":
        storage = "storage:\n  backend: sqlite\n  sqlite:\n    path: shared.db\n    busy_timeout: 10\n"
    else:
        suffix = uuid.uuid4().hex[:8]
        storage = (f"storage:\n  backend: dynamodb\n  dynamodb:\n    endpoint_url: {request.getfixturevalue('moto_server')}\n"
                   f"    departments_table: departments-{suffix}\n    events_table: events-{suffix}\n")
    config = write_config(tmp_path, "server:\n  shutdown_grace: 1\nsync:\n  gap_seconds: 1\n" + storage)
    created = run_cli("create-tables", "--config", str(config))
    assert created.returncode == 0, created.stderr
    servers = [ServerProcess(config) for _ in range(3)]
    yield request.param, servers
    for server in servers:
        server.kill()


def test_three_processes_on_one_store_act_as_one_server(three_processes):
    backend, servers = three_processes
    urls = [server.url for server in servers]
    status, body = call(urls[0] + "/api/departments", "POST", {"name": "공유팀"})
    assert status == 201
    department = body["department"]["id"]
    rng = random.Random(12)
    acknowledged: list[int] = []  # the seqs creates and updates answered with
    deletes: list[str] = []  # deletes answered 200 (their answer carries no seq)
    unanswered = 0
    alive = [True, True, True]
    known: list[str] = []
    lock = threading.Lock()

    failures: list[BaseException] = []

    def recorded(work):
        def run(*args) -> None:
            try:
                work(*args)
            except BaseException as exc:  # an assertion in a thread fails the test
                failures.append(exc)
        return run

    @recorded
    def writer(worker: int) -> None:
        nonlocal unanswered
        local = random.Random(worker)
        for _ in range(WRITES // 3):
            target = local.choice([i for i in range(3) if alive[i]])
            with lock:
                existing = list(known)
            try:
                if existing and local.random() < 0.4:
                    event_id = local.choice(existing)
                    if local.random() < 0.5:
                        status, body = call(f"{urls[target]}/api/events/{event_id}", "PUT", {"title": f"고침 {worker}"})
                    else:
                        status, body = call(f"{urls[target]}/api/events/{event_id}", "DELETE")
                        if status == 200:
                            with lock:
                                deletes.append(event_id)
                                if event_id in known:
                                    known.remove(event_id)
                    assert status in (200, 404), body
                    if status == 200 and "event" in body:
                        with lock:
                            acknowledged.append(body["event"]["seq"])
                else:
                    status, body = call(f"{urls[target]}/api/events/{department}", "POST",
                                        {"event_date": f"2026-12-{local.randint(1, 28):02d}", "title": f"일정 {worker}"})
                    assert status == 201, body
                    with lock:
                        known.append(body["event"]["id"])
                        acknowledged.append(body["event"]["seq"])
            except (OSError, urllib.error.URLError):
                with lock:
                    unanswered += 1  # the process was paused past the timeout, or killed

    replicas = [Replica(department) for _ in range(3)]
    held: list[float] = []  # how long each read through a live process took

    @recorded
    def reader(index: int, stop: threading.Event) -> None:
        while not stop.is_set():
            target = rng.choice([i for i in range(3) if alive[i] and i != 1])
            started = time.monotonic()
            try:
                replicas[index].follow(urls[target])
            except (OSError, urllib.error.URLError):
                continue
            held.append(time.monotonic() - started)
            time.sleep(0.02)

    stop = threading.Event()
    readers = [threading.Thread(target=reader, args=(i, stop)) for i in range(3)]
    writers = [threading.Thread(target=writer, args=(w,)) for w in range(3)]
    for thread in readers + writers:
        thread.start()
    time.sleep(0.5)
    servers[1].process.send_signal(signal.SIGSTOP)  # a writer stops mid-run, maybe holding the lock
    time.sleep(3)
    servers[1].process.send_signal(signal.SIGCONT)
    time.sleep(0.3)
    alive[2] = False
    servers[2].process.send_signal(signal.SIGKILL)  # mid-write, most likely
    for thread in writers:
        thread.join(120)
    stop.set()
    for thread in readers:
        thread.join(30)

    assert not failures, failures
    # a paused or killed writer never holds readers of other processes past gap_seconds (1 s)
    assert held and max(held) < 1 + 4, max(held)
    # Every acknowledged write has its own seq; only writes whose answer was lost may have
    # taken one no client heard of.
    assert len(acknowledged) == len(set(acknowledged)) and acknowledged
    status, full = call(f"{urls[0]}/api/events/{department}")
    assert status == 200
    assert max(acknowledged) <= full["seq"]
    if backend == "sqlite":  # DynamoDB also spends seqs on writes that lost a race (noops)
        assert full["seq"] <= len(acknowledged) + len(deletes) + unanswered
    expected = {event["id"]: event for event in full["events"]}
    for url in urls[:2]:  # the live processes agree
        assert call(f"{url}/api/events/{department}")[1]["events"] == full["events"]
    for replica in replicas:
        while replica.seq < full["seq"]:
            replica.follow(urls[0])
        assert replica.events == expected
    # one If-Match winner among updates sent at once through both live processes
    event_id, version = full["events"][0]["id"], full["events"][0]["version"]
    results: list[int] = []

    def update(i: int) -> None:
        results.append(call(f"{urls[i % 2]}/api/events/{event_id}", "PUT", {"title": f"경쟁 {i}"},
                            {"If-Match": f'"{version}"'})[0])

    racers = [threading.Thread(target=update, args=(i,)) for i in range(6)]
    for thread in racers:
        thread.start()
    for thread in racers:
        thread.join(60)
    assert sorted(results) == [200] + [412] * 5


def open_when_all_are_ready(path: Path, ready: Any) -> None:
    """In a forked child: open `path` the moment every sibling is ready too, as `serve --processes` does."""
    async def main() -> None:
        storage = SqliteStorage(SqliteOptions(path=path))
        await storage.open()
        await storage.close()
    ready.wait()
    asyncio.run(main())


def test_processes_opening_a_new_sqlite_file_at_once_all_open(tmp_path):
    """`serve --processes N` on a new file: N processes set WAL mode and make the tables at the
    same moment. SQLite answers some of them "database is locked" at once, without waiting
    for its busy timeout (it would deadlock otherwise), so opening retries until it can."""
    fork = multiprocessing.get_context("fork")
    for round_ in range(10):
        ready = fork.Barrier(4)
        children = [fork.Process(target=open_when_all_are_ready, args=(tmp_path / f"new-{round_}.db", ready))
                    for _ in range(4)]
        for child in children:
            child.start()
        for child in children:
            child.join(60)
        assert [child.exitcode for child in children] == [0, 0, 0, 0], f"round {round_}"
