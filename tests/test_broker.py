"""`broker: redis` (contract 12.3, 12.4): rooms shared by several processes through Redis.

Real processes on one store (one SQLite file, or shared DynamoDB tables on moto's server),
a real `redis-server` that the tests pause (SIGSTOP) and restart, WebSocket clients spread
over the processes, writes sent to random processes. Every client must see every change of
its room once and in order — its pushes' seqs only go up — and end equal to the store, with
no client action while Redis is away.
"""
from __future__ import annotations

import asyncio
import json
import random
import urllib.request
import uuid

import pytest
import tornado.httpclient

from tests.client import SyncClient
from tests.process import RedisProcess, ServerProcess, http_json, run_cli, write_config

GAP = 1


@pytest.fixture
def redis_server():
    server = RedisProcess()
    yield server
    server.stop()


@pytest.fixture
def start_servers():
    """`start_servers(config, n)`: n `calsync serve` processes, killed at teardown."""
    started: list[ServerProcess] = []

    def start(config, count: int) -> list[ServerProcess]:
        servers = [ServerProcess(config) for _ in range(count)]
        started.extend(servers)
        return servers

    yield start
    for server in started:
        server.kill()


def broker_config(tmp_path, redis_url: str, backend: str, request) -> str:
    if backend == "sqlite":
        storage = "storage:\n  backend: sqlite\n  sqlite:\n    path: shared.db\n    busy_timeout: 10\n"
    else:
        suffix = uuid.uuid4().hex[:8]
        storage = (f"storage:\n  backend: dynamodb\n  dynamodb:\n"
                   f"    endpoint_url: {request.getfixturevalue('moto_server')}\n"
                   f"    departments_table: departments-{suffix}\n    events_table: events-{suffix}\n")
    config = write_config(tmp_path, (
        f"server:\n  shutdown_grace: 1\n  ping_interval: 1\n  ping_timeout: 2\nsync:\n  gap_seconds: {GAP}\n"
        f"broker:\n  backend: redis\n  url: {redis_url}\n  channel_prefix: t{uuid.uuid4().hex[:6]}\n" + storage))
    created = run_cli("create-tables", "--config", str(config))
    assert created.returncode == 0, created.stderr
    return config


class Copy:
    """A client's copy of one department, kept from its join answer and its pushes."""

    def __init__(self, client: SyncClient, department: str) -> None:
        self.client = client
        self.department = department
        self.events: dict[str, dict] = {}
        self.seq = 0
        self.seqs: list[int] = []
        self.task: asyncio.Task | None = None

    async def join(self) -> None:
        await self.client.send("join_department", {"department_id": self.department, "since": 0})
        while (reply := await self.client.receive())["event"] != "joined_department":
            assert reply["event"].startswith("department_"), reply  # crossed over Redis before the join
        for event in reply["data"]["events"]:
            self.events[event["id"]] = event
        self.seq = reply["data"]["seq"]
        self.task = asyncio.ensure_future(self._read())

    async def _read(self) -> None:
        while True:
            frame = await self.client.receive(timeout=120)
            data = frame["data"]
            if frame["event"] in ("event_created", "event_updated"):
                self._at(data["seq"])
                self.events[data["id"]] = data
            elif frame["event"] == "event_deleted":
                self._at(data["seq"])
                self.events.pop(data["id"], None)

    def _at(self, seq: int) -> None:
        assert seq > self.seq, f"push of seq {seq} after {self.seq}: repeated or out of order"
        self.seq = seq
        self.seqs.append(seq)


async def store_of(url: str, department: str) -> dict[str, dict]:
    status, body = http_json(f"{url}/api/events/{department}")
    assert status == 200
    return {event["id"]: event for event in body["events"]}


async def converge(copies: list[Copy], url: str, department: str, timeout: float = 20) -> dict[str, dict]:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        store = await store_of(url, department)
        if all(copy.events == store for copy in copies):
            return store
        for copy in copies:
            if copy.task is not None and copy.task.done():
                copy.task.result()  # an assertion inside the reader
        if asyncio.get_running_loop().time() > deadline:
            behind = [(copy.seq, len(copy.events)) for copy in copies]
            raise AssertionError(f"copies never converged: store {len(store)} events, copies {behind}")
        await asyncio.sleep(0.2)


@pytest.mark.parametrize("backend", ["sqlite", "dynamodb"])
async def test_every_client_of_every_process_gets_every_change_through_redis_faults(tmp_path, start_servers,
                                                                                 redis_server,
                                                                                 backend, request):
    config = broker_config(tmp_path, redis_server.url, backend, request)
    servers = start_servers(config, 3)
    clients: list[SyncClient] = []
    copies: list[Copy] = []
    http = tornado.httpclient.AsyncHTTPClient(force_instance=True)
    try:
        assert http_json(servers[0].url + "/ready")[1]["broker"] == "up"
        status, body = http_json(servers[0].url + "/api/departments", "POST", {"name": "공유팀"})
        department = body["department"]["id"]
        for i in range(6):
            client = await SyncClient.connect(servers[i % 3].ws_url)
            clients.append(client)
            copies.append(Copy(client, department))
            await copies[-1].join()
        rng = random.Random(7)
        ids: list[str] = []
        alive = [0, 1, 2]

        async def write(n: int) -> None:
            base = servers[rng.choice(alive)].url
            if ids and rng.random() < 0.35:
                event_id = rng.choice(ids)
                method, path, body = rng.choice([("PUT", f"/api/events/{event_id}", {"title": f"고침 {n}"}),
                                                 ("DELETE", f"/api/events/{event_id}", None)])
            else:
                method, path, body = "POST", f"/api/events/{department}", {"event_date": "2026-12-02",
                                                                           "title": f"일정 {n}"}
            response = await http.fetch(base + path, method=method, raise_error=False,
                                        body=None if body is None else json.dumps(body))
            if response.code == 201:
                ids.append(json.loads(response.body)["event"]["id"])

        for n in range(30):  # Redis answering
            await write(n)
        late = Copy(await SyncClient.connect(servers[2].ws_url), department)  # a join during a burst
        clients.append(late.client)
        burst = [asyncio.ensure_future(write(100 + n)) for n in range(15)]
        await late.join()
        await asyncio.gather(*burst)
        copies.append(late)
        await converge(copies, servers[0].url, department)

        redis_server.pause()  # Redis stops answering mid-run: writes go on
        for n in range(20):
            await write(200 + n)
        await asyncio.sleep(1)
        redis_server.resume()
        await converge(copies, servers[0].url, department)

        burst = [asyncio.ensure_future(write(250 + n)) for n in range(10)]
        await asyncio.sleep(0.05)
        servers[2].process.kill()  # a process dies mid-burst: its clients are gone, nobody else misses a thing
        alive.remove(2)
        await asyncio.gather(*burst, return_exceptions=True)
        for i, copy in enumerate(copies):
            if (i % 3 == 2 or copy is late) and copy.task is not None:
                copy.task.cancel()  # its connection died with its process
        copies = [copy for i, copy in enumerate(copies) if i % 3 != 2 and copy is not late]
        await converge(copies, servers[0].url, department)

        redis_server.stop()  # Redis restarts empty
        for n in range(15):
            await write(300 + n)
        status, ready = http_json(servers[1].url + "/ready")
        assert status == 200 and ready["status"] == "ready"
        redis_server.start()
        for n in range(10):
            await write(400 + n)
        store = await converge(copies, servers[0].url, department, timeout=30)
        for copy in copies:
            assert copy.seqs == sorted(set(copy.seqs))
        assert len(store) > 10
        deadline = asyncio.get_running_loop().time() + 10
        while any(http_json(servers[i].url + "/ready")[1]["broker"] != "up" for i in alive):
            assert asyncio.get_running_loop().time() < deadline, [servers[i].output[-2000:] for i in alive]
            await asyncio.sleep(0.2)
        servers_alive = [servers[i] for i in alive]
        metrics = [urllib.request.urlopen(server.url + "/metrics", timeout=10).read().decode() for server in servers_alive]
        assert all("calsync_broker_up 1.0" in text for text in metrics)
        fills = sum(float(line.split()[-1]) for text in metrics for line in text.splitlines()
                    if line.startswith("calsync_broker_fills_total"))
        assert fills > 0  # what Redis lost while it was away came from the feed
    finally:
        http.close()
        for copy in copies:
            if copy.task is not None:
                copy.task.cancel()
        for client in clients:
            client.close()


async def test_presence_counts_every_process_and_forgets_a_dead_one(tmp_path, start_servers, redis_server, request):
    config = broker_config(tmp_path, redis_server.url, "sqlite", request)
    servers = start_servers(config, 2)
    clients = []
    try:
        status, body = http_json(servers[0].url + "/api/departments", "POST", {"name": "회의실"})
        department = body["department"]["id"]
        for server, count in ((servers[0], 2), (servers[1], 3)):
            for _ in range(count):
                client = await SyncClient.connect(server.ws_url)
                clients.append(client)
                await client.join(department)
        asker = clients[0]

        async def presence() -> dict:
            reply = await asker.request("presence_request", {"department_id": department}, "p")
            assert reply["event"] == "presence", reply
            return reply["data"]

        deadline = asyncio.get_running_loop().time() + 10
        while (answer := await presence())["connections"] != 5:
            assert asyncio.get_running_loop().time() < deadline, answer
            await asyncio.sleep(0.2)
        assert answer == {"department_id": department, "connections": 5, "members": [{"sub": "-", "connections": 5}]}
        clients[1].close()  # a connection closes: it stops counting
        deadline = asyncio.get_running_loop().time() + 10
        while (await presence())["connections"] != 4:
            assert asyncio.get_running_loop().time() < deadline
            await asyncio.sleep(0.2)
        servers[1].kill()  # a process dies: its three stop counting within ping_timeout + 10 s
        deadline = asyncio.get_running_loop().time() + 2 + 10 + 3
        while (await presence())["connections"] != 1:
            assert asyncio.get_running_loop().time() < deadline
            await asyncio.sleep(0.5)
    finally:
        for client in clients:
            client.close()


def test_serve_starts_without_redis_and_says_so(tmp_path, request):
    missing = RedisProcess()
    url = missing.url
    missing.stop()  # nothing listens there now
    config = broker_config(tmp_path, url, "sqlite", request)
    server = ServerProcess(config)
    try:
        assert "is not reachable yet" in server.output
        status, body = http_json(server.url + "/ready")
        assert status == 200 and body["broker"] == "down"
        status, _ = http_json(server.url + "/api/departments", "POST", {"name": "쓰기팀"})
        assert status == 201  # writes go on without Redis
    finally:
        server.kill()


def test_several_processes_with_a_local_broker_say_pushes_stay_in_each(tmp_path):
    config = write_config(tmp_path, "storage:\n  backend: sqlite\n  sqlite:\n    path: shared.db\n")
    server = ServerProcess(config, "--processes", "2")
    try:
        assert "broker: local" in server.output and "2 processes" in server.output
        status, _ = http_json(server.url + "/api/departments", "POST", {"name": "두 프로세스"})
        assert status == 201
    finally:
        assert server.stop() == 0, server.output


async def test_a_push_crosses_processes_through_redis_at_once(tmp_path, start_servers, redis_server, request):
    """Not by the feed's sweep (every gap_seconds, 5 s here): the Redis message carries it."""
    config = broker_config(tmp_path, redis_server.url, "sqlite", request)
    config.write_text(config.read_text().replace(f"gap_seconds: {GAP}", "gap_seconds: 5"))
    servers = start_servers(config, 2)
    client = None
    try:
        status, body = http_json(servers[0].url + "/api/departments", "POST", {"name": "빠른팀"})
        department = body["department"]["id"]
        client = await SyncClient.connect(servers[1].ws_url)
        await client.send("join_department", {"department_id": department})
        while (await client.receive())["event"] != "joined_department":
            pass  # the department_created push may come first: it crossed over Redis too
        loop = asyncio.get_running_loop()
        for n in range(3):
            started = loop.time()
            status, created = http_json(servers[0].url + f"/api/events/{department}", "POST",
                                        {"event_date": "2026-12-03", "title": f"번개 {n}"})
            push = await client.receive(timeout=10)
            while push["event"] == "department_created":  # it crossed over Redis too, and may come late
                push = await client.receive(timeout=10)
            assert push["event"] == "event_created" and push["data"]["id"] == created["event"]["id"]
            assert loop.time() - started < 2.5
    finally:
        if client is not None:
            client.close()


async def test_department_changes_missed_while_redis_was_away_arrive_when_it_is_back(tmp_path, start_servers,
                                                                                   redis_server, request):
    config = broker_config(tmp_path, redis_server.url, "sqlite", request)
    servers = start_servers(config, 2)
    client = None
    try:
        status, body = http_json(servers[0].url + "/api/departments", "POST", {"name": "남는 부서"})
        kept = body["department"]["id"]
        status, body = http_json(servers[0].url + "/api/departments", "POST", {"name": "지울 부서"})
        gone = body["department"]["id"]
        client = await SyncClient.connect(servers[1].ws_url)
        await asyncio.sleep(0.5)
        redis_server.stop()
        http_json(servers[0].url + "/api/departments", "POST", {"name": "새 부서"})
        http_json(servers[0].url + f"/api/departments/{kept}", "PUT", {"description": "바뀜"})
        http_json(servers[0].url + f"/api/departments/{gone}", "DELETE")
        redis_server.start()
        wanted = {("department_created", "새 부서"), ("department_updated", "바뀜"), ("department_deleted", gone)}
        while wanted:  # earlier creates may still be queued before them: they crossed over Redis
            frame = await client.receive(timeout=15)
            data = frame["data"]
            wanted.discard((frame["event"], data.get("name") if frame["event"] == "department_created"
                            else data.get("description") if frame["event"] == "department_updated" else data["id"]))
    finally:
        if client is not None:
            client.close()
