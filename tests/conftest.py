"""Shared fixtures: a storage of every backend, and a real server on a free port.

`backend` is parametrized over every backend, so a test that asks for `storage`,
`app` or `server` runs once per backend. pytest-tornasync runs async tests on a fresh
IOLoop each (`io_loop`) and serves `app` on a free loopback port (`http_server_client`).
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import moto
import pytest
from moto.server import ThreadedMotoServer
from tornado.testing import bind_unused_port

from calsync.app import make_app
from calsync.handlers.connections import HttpServer
from calsync.server.config import ServerConfig
from calsync.server.hub import Hub
from calsync.storage.base import Storage
from tests.backends import BACKENDS, make_storage
from tests.client import SyncClient


@pytest.fixture
def aws_mock():
    """moto's in-process DynamoDB, fresh for the test."""
    with moto.mock_aws():
        yield


@pytest.fixture(scope="session")
def moto_server() -> str:
    """moto in server mode on a free loopback port: real HTTP, as DynamoDB Local would be."""
    sock, port = bind_unused_port()
    sock.close()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def storage_factory(io_loop, tmp_path: Path, request: pytest.FixtureRequest) -> Callable[..., Storage]:
    """Opened storages of a backend, all sharing one place, closed after the test."""
    opened: list[Storage] = []

    def factory(name: str) -> Storage:
        storage = make_storage(name, tmp_path, request)
        io_loop.run_sync(storage.create_tables)
        io_loop.run_sync(storage.open)
        opened.append(storage)
        return storage

    yield factory
    for storage in reversed(opened):
        io_loop.run_sync(storage.close)


@pytest.fixture
def storage(backend: str, storage_factory: Callable[..., Storage]) -> Storage:
    return storage_factory(backend)


@pytest.fixture
def server_config() -> ServerConfig:
    return ServerConfig(max_body_bytes=64 * 1024, max_message_bytes=16 * 1024)


@pytest.fixture
def hub() -> Hub:
    return Hub()


@pytest.fixture
def app(storage: Storage, hub: Hub, server_config: ServerConfig, backend: str):
    return make_app(storage, hub, server_config, backend)


@pytest.fixture
def http_server(app, io_loop, http_server_port):
    """pytest-tornasync's server, made as `calsync serve` makes it (`HttpServer`, which
    answers bodies over the limit), with `app` asked for by name so `backend` parametrizes it."""
    server = HttpServer(app)
    server.add_socket(http_server_port[0])
    yield server
    server.stop()
    io_loop.run_sync(server.close_all_connections, timeout=5)


@pytest.fixture
def base_url(http_server_client) -> str:
    return http_server_client.get_url("")


@pytest.fixture
def ws_url(http_server_client) -> str:
    return http_server_client.get_url("/ws").replace("http://", "ws://")


@pytest.fixture
def connect(ws_url, io_loop):
    """Open clients on the test server; every one is closed at teardown."""
    clients: list[SyncClient] = []

    async def open_client(**kwargs) -> SyncClient:
        client = await SyncClient.connect(ws_url, **kwargs)
        clients.append(client)
        return client

    yield open_client
    for client in clients:
        client.close()
