"""Benchmark: how fast a department syncs — full answers, answers after a change, incremental ones.

For each department size, fills a fresh store (through the storage's bulk import), starts
`calsync serve` as its own process, and measures from this process over loopback:

  * full   `GET /api/events/{id}` and WebSocket `sync_request`, nothing changed in between;
  * after a change: one `PUT`, then the full `GET` (the kept answer is patched, not rebuilt);
  * incremental: `GET ?since=&epoch=` answering the last 100 changes;
  * the first full answer after start (nothing kept yet).

Server CPU per answer is read from /proc/<pid>/stat around the answers alone (steadier than
wall time on a busy machine). Figures, not a test: nothing here passes or fails.

    .venv/bin/python tests/bench/bench_sync.py --events 5000 10000 --backend sqlite
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import tornado.websocket

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from calsync.storage.jsonfile import JsonOptions, JsonStorage  # noqa: E402
from calsync.storage.records import Department, Event  # noqa: E402
from calsync.storage.sqlite import SqliteOptions, SqliteStorage  # noqa: E402
from tests.process import ServerProcess  # noqa: E402

TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime + stime


async def fill(backend: str, folder: Path, events: int) -> str:
    if backend == "sqlite":
        storage = SqliteStorage(SqliteOptions(path=folder / "calsync.db"))
    else:
        storage = JsonStorage(JsonOptions(path=folder / "json"))
    await storage.open()
    department = Department.new("개발팀", "벤치마크")
    await storage.import_departments([department])
    records = [Event.new(department.id, {
        "event_date": f"2024-{1 + i % 12:02d}-{1 + i % 28:02d}", "title": f"팀 회의 {i}",
        "description": "주간 팀 회의: 지난주 진행 상황과 이번 주 계획을 공유합니다.", "time": "오후 2:00",
        "url": "https://example.com/meeting"}) for i in range(events)]
    for start in range(0, events, 1000):
        await storage.import_events(records[start:start + 1000])
    await storage.close()
    return department.id


class KeepAlive:
    """One HTTP/1.1 connection reused for every request, as browsers and pooled clients do
    (Tornado's own client opens a connection per request, which would be measured too)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, url: str) -> "KeepAlive":
        host, port = url.split("://", 1)[1].split(":")
        return cls(*await asyncio.open_connection(host, int(port), limit=2**30))

    async def request(self, method: str, path: str, body: bytes = b"") -> bytes:
        self.writer.write(f"{method} {path} HTTP/1.1\r\nHost: bench\r\nContent-Length: {len(body)}\r\n\r\n".encode()
                          + body)
        head = (await self.reader.readuntil(b"\r\n\r\n")).decode("latin-1").lower()
        length = int(head.split("content-length:", 1)[1].split("\r\n", 1)[0])
        return await self.reader.readexactly(length)

    def close(self) -> None:
        self.writer.close()


class Meter:
    """Wall time per call (client side) and the server's CPU during the calls."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.walls: list[float] = []
        self.cpu = 0.0

    async def measure(self, call) -> object:
        cpu, start = cpu_seconds(self.pid), time.perf_counter()
        result = await call()
        self.walls.append(time.perf_counter() - start)
        self.cpu += cpu_seconds(self.pid) - cpu
        return result

    def row(self, label: str) -> str:
        walls = sorted(self.walls)
        p50 = statistics.median(walls) * 1000
        return (f"  {label:<34} p50 {p50:7.1f} ms   server CPU {self.cpu / len(walls) * 1000:6.1f} ms/answer"
                f"   (n={len(walls)})")


async def bench(backend: str, events: int, repeat: int, changes: int) -> None:
    folder = Path(tempfile.mkdtemp(prefix="calsync-bench-sync-"))
    department_id = await fill(backend, folder, events)
    config = folder / "calsync.yaml"
    config.write_text(f"storage:\n  backend: {backend}\n  sqlite:\n    path: calsync.db\n  json:\n    path: json\n"
                      "server:\n  max_message_bytes: 67108864\n", encoding="utf-8")
    server = ServerProcess(config)
    http = await KeepAlive.open(server.url)
    path = f"/api/events/{department_id}"
    pid = server.process.pid

    async def get(query: str = "") -> dict:
        return json.loads(await http.request("GET", path + query))

    async def put(event_id: str, fields: dict) -> None:
        await http.request("PUT", f"/api/events/{event_id}", json.dumps(fields).encode())

    try:
        print(f"{backend}, {events} events in one department")
        first = Meter(pid)
        body = await first.measure(get)
        assert len(body["events"]) == events
        print(first.row("first full GET after start"))

        warm = Meter(pid)
        for _ in range(repeat):
            await warm.measure(get)
        print(warm.row("full GET, unchanged"))

        ws = await tornado.websocket.websocket_connect(server.ws_url, max_message_size=512 * 1024 * 1024)
        await ws.read_message()  # connected
        sync = Meter(pid)

        async def sync_request() -> dict:
            await ws.write_message(json.dumps({"event": "sync_request", "data": {"department_id": department_id}}))
            return json.loads(await ws.read_message())

        for _ in range(repeat):
            answer = await sync.measure(sync_request)
            assert len(answer["data"]["events"]) == events
        print(sync.row("full sync_request, unchanged"))
        ws.close()

        after_change = Meter(pid)
        ids = [e["id"] for e in body["events"]]
        for i in range(repeat):
            await put(ids[i], {"title": f"변경 {i}"})
            await after_change.measure(get)
        print(after_change.row("full GET after one change"))

        cursor = await get()
        for i in range(changes):
            await put(ids[-1 - i], {"time": f"{i}"})
        incremental = Meter(pid)
        query = f"?since={cursor['seq']}&epoch={cursor['epoch']}"
        for _ in range(repeat):
            answer = await incremental.measure(lambda: get(query))
            assert len(answer["events"]) == changes
        print(incremental.row(f"incremental GET, {changes} changes"))
    finally:
        http.close()
        server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, nargs="+", default=[5000, 10000])
    parser.add_argument("--backend", choices=["sqlite", "json"], default="sqlite")
    parser.add_argument("--repeat", type=int, default=30)
    parser.add_argument("--changes", type=int, default=100)
    args = parser.parse_args()
    print(f"calsync sync benchmark on {os.cpu_count()} cores (Python {sys.version.split()[0]})")
    for events in args.events:
        asyncio.run(bench(args.backend, events, args.repeat, args.changes))


if __name__ == "__main__":
    main()
