"""Benchmark: REST creates per second with 1, 2 and 3 `calsync serve` processes on one
SQLite file (contract 12.1), writers spread evenly over the processes.

Every process runs its own group commit; between processes SQLite's write lock decides, so
this shows what a second process buys on one box (and what it costs). Figures, not a test.

    .venv/bin/python tests/bench/bench_processes.py --writers 16 --creates 3000
"""
from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

import tornado.httpclient

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from tests.bench.bench_server import post  # noqa: E402
from tests.process import ServerProcess  # noqa: E402


async def creates_per_second(bases: list[str], department_id: str, writers: int, creates: int) -> float:
    http = tornado.httpclient.AsyncHTTPClient(force_instance=True, max_clients=writers)
    remaining = iter(range(creates))

    async def writer(base: str) -> None:
        for i in remaining:
            await post(http, f"{base}/api/events/{department_id}", {"event_date": "2024-02-01", "title": f"create {i}"})

    started = time.perf_counter()
    await asyncio.gather(*(writer(bases[n % len(bases)]) for n in range(writers)))
    elapsed = time.perf_counter() - started
    http.close()
    return creates / elapsed


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--writers", type=int, default=16)
    parser.add_argument("--creates", type=int, default=3000)
    parser.add_argument("--processes", type=int, nargs="+", default=[1, 2, 3])
    args = parser.parse_args()
    for count in args.processes:
        with tempfile.TemporaryDirectory() as folder:
            config = Path(folder) / "calsync.yaml"
            config.write_text("storage:\n  backend: sqlite\n  sqlite:\n    path: calsync.db\n    busy_timeout: 30\n")
            servers = [ServerProcess(config) for _ in range(count)]
            try:
                http = tornado.httpclient.AsyncHTTPClient(force_instance=True)
                department = (await post(http, servers[0].url + "/api/departments", {"name": "쓰기"}))["department"]["id"]
                http.close()
                rate = await creates_per_second([s.url for s in servers], department, args.writers, args.creates)
                print(f"{count} process{'es' if count > 1 else ''} on one SQLite file, {args.writers} writers:"
                      f" {rate:.0f} creates/s ({args.creates} creates)")
            finally:
                for server in servers:
                    server.stop()


if __name__ == "__main__":
    asyncio.run(main())
