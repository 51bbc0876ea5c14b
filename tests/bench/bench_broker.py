"""Benchmark: pushes with 1 and 2 `calsync serve` processes on one box (`--processes N`,
`broker: redis`), side by side in one run.

For each process count: C WebSocket clients join one room (the kernel spreads their
connections over the processes), then
  * latency: one REST create at a time; each delivery timed from the create's send to the
    kernel's arrival stamp at each client (p50, p99);
  * throughput: W writers send P creates as fast as they are answered; deliveries per
    second until every client had every push, and CPU per delivery of all server processes
    plus redis-server (the broker's share given apart).
Then what one redis-server carries: PUBLISH of a push-sized message with every process's
pattern subscription in place (redis-benchmark). Figures, not a test.

    .venv/bin/python tests/bench/bench_broker.py --clients 1000 5000 --pushes 30 --creates 300
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import tornado.httpclient

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from tests.bench.bench_server import join_room, percentile, post, push_latency  # noqa: E402
from tests.bench.bench_sync import cpu_seconds  # noqa: E402
from tests.process import RedisProcess, ServerProcess  # noqa: E402


def children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(p) for p in path.read_text().split()] if path.exists() else []


async def throughput(base: str, department_id: str, clients: int, writers: int, creates: int,
                     server_pids: list[int], redis_pid: int) -> tuple[float, float, float]:
    host, port = base.split("://")[1].split(":")
    connections = await join_room(host, int(port), clients, department_id)
    expected = clients * creates
    received = 0
    done = asyncio.Event()

    def arrived(at: float, frame: bytes) -> None:
        nonlocal received
        if b'"event_created"' in frame:
            received += 1
            if received == expected:
                done.set()

    for connection in connections:
        connection.on_frame = arrived
    http = tornado.httpclient.AsyncHTTPClient(force_instance=True, max_clients=writers)
    remaining = iter(range(creates))

    async def writer() -> None:
        for i in remaining:
            await post(http, f"{base}/api/events/{department_id}", {"event_date": "2024-01-20", "title": f"t {i}"})

    cpu_before = sum(cpu_seconds(pid) for pid in server_pids)
    redis_before = cpu_seconds(redis_pid) if redis_pid else 0.0
    started = time.perf_counter()
    await asyncio.gather(*(writer() for _ in range(writers)))
    await asyncio.wait_for(done.wait(), 300)
    elapsed = time.perf_counter() - started
    cpu = sum(cpu_seconds(pid) for pid in server_pids) - cpu_before
    redis_cpu = (cpu_seconds(redis_pid) - redis_before) if redis_pid else 0.0
    for connection in connections:
        connection.close()
    http.close()
    return expected / elapsed, (cpu + redis_cpu) * 1e6 / expected, redis_cpu * 1e6 / expected


async def run(processes: int, clients: int, pushes: int, writers: int, creates: int, redis: RedisProcess) -> None:
    with tempfile.TemporaryDirectory() as folder:
        config = Path(folder) / "calsync.yaml"
        config.write_text(f"storage:\n  backend: sqlite\n  sqlite:\n    path: calsync.db\n"
                          f"limits:\n  max_connections: 20000\n"
                          f"broker:\n  backend: {'redis' if processes > 1 else 'local'}\n  url: {redis.url}\n")
        server = ServerProcess(config, "--processes", str(processes))
        try:
            time.sleep(1)
            pids = children(server.process.pid) or [server.process.pid]
            http = tornado.httpclient.AsyncHTTPClient(force_instance=True)
            room = (await post(http, server.url + "/api/departments", {"name": "벤치"}))["department"]["id"]
            http.close()
            await asyncio.sleep(1)  # its department_created push has reached every process's clients
            latencies = await push_latency(server.url, room, clients, pushes)
            rate, cpu, redis_cpu = await throughput(server.url, room, clients, writers, creates, pids,
                                                    redis.process.pid if processes > 1 and redis.process else 0)
            print(f"{processes} process{'es' if processes > 1 else ''}, {clients} clients:"
                  f" latency p50 {percentile(latencies, 50) * 1000:.1f} ms, p99 {percentile(latencies, 99) * 1000:.1f} ms;"
                  f" {rate:,.0f} deliveries/s; {cpu:.1f} µs CPU per delivery"
                  + (f" (redis-server {redis_cpu:.2f} µs of it)" if processes > 1 else ""), flush=True)
        finally:
            server.stop()


def redis_capacity(redis: RedisProcess, subscribers: int) -> None:
    listeners = [subprocess.Popen(["redis-cli", "-p", str(redis.port), "psubscribe", "bench:room:*"],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for _ in range(subscribers)]
    time.sleep(0.5)
    message = json.dumps({"origin": "1-abcdef12", "room": "x" * 36, "seq": 123456,
                          "text": json.dumps({"event": "event_created", "data": {"title": "주간 회의" * 20}})})
    out = subprocess.run(["redis-benchmark", "-p", str(redis.port), "-q", "-n", "200000", "-c", "20",
                          "PUBLISH", "bench:room:r1", message], capture_output=True, text=True, timeout=300).stdout
    for listener in listeners:
        listener.kill()
    rate = out.strip().rsplit(": ", 1)[-1] if out.strip() else "?"
    print(f"redis-server: PUBLISH of a {len(message)}-byte push to {subscribers} pattern subscribers: {rate}")


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, nargs="+", default=[1000])
    parser.add_argument("--pushes", type=int, default=30, help="creates timed one at a time")
    parser.add_argument("--creates", type=int, default=300, help="creates sent as fast as answered")
    parser.add_argument("--writers", type=int, default=8)
    args = parser.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(soft, 4 * max(args.clients) + 256)), hard))
    redis = RedisProcess()
    try:
        for clients in args.clients:
            for processes in (1, 2):
                await run(processes, clients, args.pushes, args.writers, args.creates, redis)
        redis_capacity(redis, 2)
    finally:
        redis.stop()


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    asyncio.run(main())
