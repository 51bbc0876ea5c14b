"""Benchmark: push latency to many WebSocket clients, and REST create throughput.

Starts `calsync serve` as its own process on a fresh store, then measures, from this
process over loopback:

  * push latency: the time from sending a REST create to each client in the room
    receiving its `event_created` (p50/p99 over every delivery);
  * REST creates/s with N concurrent clients;
  * with --slow-consumer: the same room twice, the second time with one more member that
    joined and then stopped reading; the others' latency and the server's memory (VmRSS)
    side by side, and how that member was closed.

    .venv/bin/python tests/bench/bench_server.py --clients 1000 --pushes 50 --writers 16
    .venv/bin/python tests/bench/bench_server.py --clients 1000 --pushes 2000 --slow-consumer --description-bytes 2000

Figures, not a test: nothing here passes or fails.
"""
from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import resource
import socket
import statistics
import struct
import sys
import tempfile
import time
from pathlib import Path

import tornado.httpclient

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from tests.bench.bench_sync import cpu_seconds, fill  # noqa: E402
from tests.process import ServerProcess  # noqa: E402

SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)  # Linux: the kernel stamps each packet on arrival


class LightClient:
    """A bare WebSocket client that notes when each frame reached its socket.

    The arrival time is the kernel's receive timestamp (SO_TIMESTAMPNS), not the moment
    this Python process got round to reading the socket: with a thousand clients in one
    process, reading them all takes longer than the server takes to send.
    """

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buffer = b""
        self.upgraded = asyncio.get_running_loop().create_future()
        self.frames: asyncio.Queue[bytes] = asyncio.Queue()
        self.on_frame = None  # set while timing: called with (arrival time, frame), frame not queued

    @classmethod
    async def connect(cls, host: str, port: int) -> "LightClient":
        loop = asyncio.get_running_loop()
        sock = socket.socket()
        sock.setblocking(False)
        await loop.sock_connect(sock, (host, port))
        sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        client = cls(sock)
        loop.add_reader(sock, client._readable)
        key = base64.b64encode(os.urandom(16)).decode()
        await loop.sock_sendall(sock, (f"GET /ws HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
                                       f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                                       "Sec-WebSocket-Version: 13\r\n\r\n").encode())
        await client.upgraded
        return client

    def _readable(self) -> None:
        try:
            data, ancillary, _, _ = self.sock.recvmsg(65536, socket.CMSG_SPACE(16))
        except BlockingIOError:
            return
        if not data:
            asyncio.get_running_loop().remove_reader(self.sock)
            return
        arrived = time.time()
        for level, kind, payload in ancillary:
            if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS:
                seconds, nanoseconds = struct.unpack("qq", payload[:16])
                arrived = seconds + nanoseconds / 1e9
        self._received(data, arrived)

    def _received(self, data: bytes, arrived: float) -> None:
        self.buffer += data
        if not self.upgraded.done():
            head, sep, rest = self.buffer.partition(b"\r\n\r\n")
            if not sep:
                return
            self.buffer = rest
            self.upgraded.set_result(head)
        while len(self.buffer) >= 2:
            length, offset = self.buffer[1] & 0x7F, 2
            if length == 126:
                length, offset = int.from_bytes(self.buffer[2:4], "big"), 4
            elif length == 127:
                length, offset = int.from_bytes(self.buffer[2:10], "big"), 10
            if len(self.buffer) < offset + length:
                return
            opcode = self.buffer[0] & 0x0F
            frame, self.buffer = self.buffer[offset:offset + length], self.buffer[offset + length:]
            if opcode == 0x9:  # the server's heartbeat ping: answer it, as a browser does
                self._send_frame(0x8A, frame)
                continue
            if opcode != 0x1:
                continue  # pong or close
            if self.on_frame is not None:
                self.on_frame(arrived, frame)
            else:
                self.frames.put_nowait(frame)

    def send(self, text: str) -> None:
        self._send_frame(0x81, text.encode())

    def _send_frame(self, first_byte: int, payload: bytes) -> None:
        mask = os.urandom(4)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        header = bytes([first_byte, 0x80 | len(payload)]) if len(payload) < 126 else \
            bytes([first_byte, 0x80 | 126]) + len(payload).to_bytes(2, "big")
        self.sock.send(header + mask + masked)

    def close(self) -> None:
        asyncio.get_running_loop().remove_reader(self.sock)
        self.sock.close()


async def connect_many(host: str, port: int, count: int, wave: int = 100) -> list[LightClient]:
    """`count` clients, connected in waves, as a room fills up."""
    connections: list[LightClient] = []
    for start in range(0, count, wave):
        connections += await asyncio.gather(*(LightClient.connect(host, port) for _ in range(start, min(count, start + wave))))
    return connections


async def join_room(host: str, port: int, count: int, department_id: str) -> list[LightClient]:
    """`count` clients in the department's room (pushes that come before the answer skipped)."""
    connections = await connect_many(host, port, count)
    frame = json.dumps({"event": "join_department", "data": {"department_id": department_id}})
    for connection in connections:
        assert b'"connected"' in await connection.frames.get()
        connection.send(frame)
    for connection in connections:
        while b'"joined_department"' not in await connection.frames.get():
            pass
    return connections


def system_seconds(pid: int) -> float:
    """The kernel's share of the server's CPU (stime): for pushes, mostly loopback TCP sends."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[12]) / os.sysconf("SC_CLK_TCK")


def resident_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def summary(latencies: list[float]) -> str:
    return (f"p50 {percentile(latencies, 50) * 1000:.1f} ms   p99 {percentile(latencies, 99) * 1000:.1f} ms"
            f"   max {max(latencies) * 1000:.1f} ms   mean {statistics.mean(latencies) * 1000:.1f} ms")


async def slow_consumer(server: ServerProcess, room: str, clients: int, pushes: int, description: str) -> None:
    pid = server.process.pid
    await push_latency(server.url, room, min(clients, 100), 20, description=description)  # warm up
    print(f"slow consumer: {clients} readers, {pushes} pushes with {len(description.encode())}-byte descriptions")
    print(f"  server memory at start {resident_mib(pid):.1f} MiB")
    plain = await push_latency(server.url, room, clients, pushes, description=description)
    print(f"  without it:           {summary(plain)}   server memory {resident_mib(pid):.1f} MiB")
    stalled = await push_latency(server.url, room, clients, pushes, stalled=1, description=description)
    print(f"  with one not reading: {summary(stalled)}   server memory {resident_mib(pid):.1f} MiB")
    again = await push_latency(server.url, room, clients, pushes, stalled=1, description=description)
    print(f"  and once more:        {summary(again)}   server memory {resident_mib(pid):.1f} MiB")
    print(f"  p99 ratio {percentile(stalled, 99) / percentile(plain, 99):.2f}x;"
          f" those not reading were closed with 1013: {server.output.count('code=1013')} of 2")


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


async def post(client: tornado.httpclient.AsyncHTTPClient, url: str, body: dict) -> dict:
    response = await client.fetch(url, method="POST", body=json.dumps(body, ensure_ascii=False))
    return json.loads(response.body)


async def push_latency(base: str, department_id: str, clients: int, pushes: int, stalled: int = 0,
                       description: str = "", pid: int | None = None) -> list[float]:
    """Latencies of every delivery to `clients` readers; `stalled` more members join and then
    never read again (their kernel receive buffers kept small, so the server sees it soon)."""
    host, port = base.split("://")[1].split(":")
    stopped: list[LightClient] = []
    for _ in range(stalled):
        member = await LightClient.connect(host, int(port))
        member.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        assert b'"connected"' in await member.frames.get()
        member.send(json.dumps({"event": "join_department", "data": {"department_id": department_id}}))
        assert b'"joined_department"' in await member.frames.get()
        asyncio.get_running_loop().remove_reader(member.sock)  # and it reads no more
        stopped.append(member)
    connections = await join_room(host, int(port), clients, department_id)

    http = tornado.httpclient.AsyncHTTPClient(force_instance=True)
    latencies: list[float] = []
    arrivals: list[float] = []
    everyone = asyncio.Event()

    def arrived(at: float, frame: bytes) -> None:
        assert b'"event_created"' in frame
        arrivals.append(at)
        if len(arrivals) == len(connections):
            everyone.set()

    for connection in connections:
        connection.on_frame = arrived
    cpu_before = cpu_seconds(pid) if pid else 0.0
    system_before = system_seconds(pid) if pid else 0.0
    for i in range(pushes):
        arrivals.clear()
        everyone.clear()
        sent = time.time()  # the kernel's arrival stamps are wall-clock time too
        await post(http, f"{base}/api/events/{department_id}",
                   {"event_date": "2024-01-20", "title": f"push {i}", "description": description})
        await asyncio.wait_for(everyone.wait(), 30)
        latencies.extend(at - sent for at in arrivals)
    if pid:
        cpu, system = cpu_seconds(pid) - cpu_before, system_seconds(pid) - system_before
        print(f"  server CPU {cpu * 1e6 / (pushes * clients):.1f} µs per delivery, of it"
              f" {system * 1e6 / (pushes * clients):.1f} µs in the kernel ({cpu * 1000 / pushes:.1f} ms per push,"
              " the REST create included)")
    for connection in connections:
        connection.close()
    for member in stopped:
        member.sock.close()  # its reader is gone already
    http.close()
    return latencies


async def create_rate(base: str, department_id: str, writers: int, creates: int, pid: int | None = None) -> float:
    http = tornado.httpclient.AsyncHTTPClient(force_instance=True, max_clients=writers)
    remaining = iter(range(creates))

    async def writer() -> None:
        for i in remaining:
            await post(http, f"{base}/api/events/{department_id}", {"event_date": "2024-02-01", "title": f"create {i}"})

    started, cpu_before = time.perf_counter(), cpu_seconds(pid) if pid else 0.0
    await asyncio.gather(*(writer() for _ in range(writers)))
    elapsed = time.perf_counter() - started
    if pid:
        print(f"  server CPU {(cpu_seconds(pid) - cpu_before) * 1e6 / creates:.0f} µs per create")
    http.close()
    return creates / elapsed


async def create_latency(base: str, department_id: str, members: int, creates: int) -> list[float]:
    """Wall time of one REST create at a time, with `members` WebSocket clients in the room."""
    host, port = base.split("://")[1].split(":")
    connections = await connect_many(host, int(port), members)
    for connection in connections:
        await connection.frames.get()
        connection.send(json.dumps({"event": "join_department", "data": {"department_id": department_id}}))
    for connection in connections:
        await connection.frames.get()
        connection.on_frame = lambda at, frame: None
    http = tornado.httpclient.AsyncHTTPClient(force_instance=True)
    times = []
    for i in range(creates):
        started = time.perf_counter()
        await post(http, f"{base}/api/events/{department_id}", {"event_date": "2024-03-01", "title": f"생성 {i}"})
        times.append(time.perf_counter() - started)
        await asyncio.sleep(0.01)  # let the fan-out finish; the next create is timed alone
    http.close()
    for connection in connections:
        connection.close()
    return times


async def idle_connections(server: ServerProcess, count: int) -> None:
    """`count` WebSockets that connect and sit idle: the server's memory per connection."""
    host, port = server.url.split("://")[1].split(":")
    pid = server.process.pid
    before = resident_mib(pid)
    connections = await connect_many(host, int(port), count, wave=200)
    for connection in connections:
        await connection.frames.get()
    await asyncio.sleep(1)
    after = resident_mib(pid)
    print(f"idle: {count} WebSocket connections open; server memory {before:.1f} -> {after:.1f} MiB"
          f" ({(after - before) * 1024 / count:.1f} KiB per connection)")
    for connection in connections:
        connection.close()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backend", default="sqlite", choices=["sqlite", "json", "memory"])
    parser.add_argument("--clients", type=int, default=1000)
    parser.add_argument("--pushes", type=int, default=50)
    parser.add_argument("--writers", type=int, default=16)
    parser.add_argument("--creates", type=int, default=2000)
    parser.add_argument("--slow-consumer", action="store_true", help="measure a room with and without a member that stops reading")
    parser.add_argument("--description-bytes", type=int, default=0, help="size of each pushed event's description")
    parser.add_argument("--idle", type=int, default=0, metavar="N", help="only measure memory for N idle connections")
    parser.add_argument("--create-latency", type=int, default=0, metavar="MEMBERS",
                        help="only time single creates in an empty room and in one of MEMBERS clients")
    parser.add_argument("--prefill", type=int, default=0, metavar="EVENTS",
                        help="the writers' department holds this many events before the creates")
    args = parser.parse_args()
    description = "x" * args.description_bytes

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = 4 * max(args.clients, args.idle, args.create_latency) + 256
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(soft, wanted)), hard))  # the server inherits it
    with tempfile.TemporaryDirectory() as folder:
        config = Path(folder) / "calsync.yaml"
        config.write_text(f"storage:\n  backend: {args.backend}\n  sqlite:\n    path: calsync.db\n"
                          f"  json:\n    path: json\nlimits:\n  max_connections: {max(10000, args.idle + 100)}\n")
        prefilled = await fill(args.backend, Path(folder), args.prefill) if args.prefill else None
        server = ServerProcess(config)
        pid = server.process.pid
        try:
            if args.idle:
                await idle_connections(server, args.idle)
                return
            http = tornado.httpclient.AsyncHTTPClient(force_instance=True)
            room = (await post(http, server.url + "/api/departments", {"name": "벤치마크"}))["department"]["id"]
            other = prefilled or (await post(http, server.url + "/api/departments", {"name": "쓰기"}))["department"]["id"]
            http.close()
            if args.create_latency:
                for members in (0, args.create_latency):
                    times = await create_latency(server.url, room, members, 200)
                    print(f"backend {args.backend}: one REST create at a time, {members} members in the room:"
                          f" p50 {percentile(times, 50) * 1000:.1f} ms, p99 {percentile(times, 99) * 1000:.1f} ms")
                return

            if args.slow_consumer:
                await slow_consumer(server, room, args.clients, args.pushes, description)
                return
            latencies = await push_latency(server.url, room, args.clients, args.pushes, description=description,
                                           pid=pid)
            print(f"backend {args.backend}: push latency, REST create -> {args.clients} WebSocket clients in one room,"
                  f" {args.pushes} pushes ({len(latencies)} deliveries)")
            print("  " + summary(latencies))

            rate = await create_rate(server.url, other, args.writers, args.creates, pid)
            print(f"backend {args.backend}: REST creates with {args.writers} concurrent clients:"
                  f" {rate:.0f} creates/s ({args.creates} creates{f', {args.prefill} events before' if args.prefill else ''})")
        finally:
            server.stop()


if __name__ == "__main__":
    asyncio.run(main())
