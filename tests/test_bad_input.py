"""Bad input anywhere gets a clear answer: errors Tornado raises itself, backend options that
fail their own check, plugins that fail to import, options built in code."""
from __future__ import annotations

import contextlib
import os
from typing import AsyncIterator

import pytest
import tornado.httpserver
import tornado.web
from pytest_tornasync.plugin import AsyncHTTPServerClient
from tornado.testing import bind_unused_port

from calsync.app import make_app
from calsync.handlers.base import ApiHandler
from calsync.handlers.connections import HttpServer
from calsync.server.config import ConfigError, load_config
from calsync.server.hub import Hub
from calsync.storage.dynamodb import DynamoOptions
from calsync.storage.memory import MemoryStorage
from tests.client import api
from tests.process import assert_one_line_exit_2, run_cli, write_config


class RaisesStatus(ApiHandler):
    def get(self, status: str) -> None:
        raise tornado.web.HTTPError(int(status))


@contextlib.asynccontextmanager
async def served_with(pattern: str, handler: type) -> AsyncIterator[AsyncHTTPServerClient]:
    """A client of a real app with one extra route, served on a free port."""
    sock, _ = bind_unused_port()
    app = make_app(MemoryStorage(), Hub())
    app.add_handlers(r".*", [(pattern, handler)])
    server = HttpServer(app)
    server.add_sockets([sock])
    client = AsyncHTTPServerClient(http_server=server, force_instance=True)
    try:
        yield client
    finally:
        client.close()
        server.stop()


@pytest.mark.parametrize("status, code", [(400, "validation_error"), (401, "unauthorized"), (403, "forbidden"),
                                          (409, "conflict"), (411, "validation_error"), (415, "validation_error"),
                                          (418, "validation_error"), (431, "validation_error"),
                                          (500, "internal"), (502, "internal"), (503, "storage_unavailable")])
async def test_any_http_error_is_the_contract_json(status, code):
    async with served_with(r"/status/(\d+)", RaisesStatus) as client:
        answered, body = await api(client, "GET", f"/status/{status}")
    assert answered == (500 if status in (500, 502) else status)
    assert body["success"] is False and body["code"] == code and body["message"]


def test_a_backend_option_that_fails_its_own_check_is_one_line(tmp_path):
    for chosen in ("dynamodb", "sqlite"):  # checked even when another backend is chosen
        path = write_config(tmp_path, f"storage:\n  backend: {chosen}\n  dynamodb:\n    billing_mode: FOO\n")
        with pytest.raises(ConfigError) as error:
            load_config(str(path))
        assert str(error.value).endswith(
            "calsync.yaml: storage.dynamodb: billing_mode must be PAY_PER_REQUEST or PROVISIONED")
    assert_one_line_exit_2(run_cli("serve", "--config", str(path)), "storage.dynamodb: billing_mode must be")


BROKEN_PLUGIN = {
    "brokenstore.py": "import calsync_driver_that_is_not_installed\n",
    "brokenstore-1.0.dist-info/METADATA": "Metadata-Version: 2.1\nName: brokenstore\nVersion: 1.0\n",
    "brokenstore-1.0.dist-info/entry_points.txt": "[calsync.storage]\nbroken = brokenstore:BrokenStorage\n",
}


def test_a_plugin_that_fails_to_import_is_one_line(tmp_path, monkeypatch):
    plugins = tmp_path / "plugins"
    for name, text in BROKEN_PLUGIN.items():
        (plugins / name).parent.mkdir(parents=True, exist_ok=True)
        (plugins / name).write_text(text)
    monkeypatch.syspath_prepend(str(plugins))
    for backend in ("broken", "brokenstore:BrokenStorage"):
        path = write_config(tmp_path, f"storage:\n  backend: {backend}\n")
        with pytest.raises(ConfigError) as error:
            load_config(str(path))
        message = str(error.value)
        assert "calsync.yaml: storage.backend:" in message and "calsync_driver_that_is_not_installed" in message
        assert "\n" not in message
    result = run_cli("serve", "--config", str(path), env={**os.environ, "PYTHONPATH": str(plugins)})
    assert_one_line_exit_2(result, "calsync_driver_that_is_not_installed")


def test_options_built_in_code_hold_plain_defaults(monkeypatch):
    monkeypatch.setenv("DEPARTMENTS_TABLE", "from-the-environment")
    options = DynamoOptions()
    assert (options.region, options.endpoint_url, options.departments_table, options.events_table,
            options.changes_table) == ("ap-northeast-2", "", "departments", "events", "")
    assert not any("${" in str(value) for value in vars(options).values())


class Breaks(ApiHandler):
    def get(self) -> None:
        raise RuntimeError("a bug")


async def test_no_query_string_reaches_a_log_line_even_on_a_bug(caplog):
    """Contract 13: Tornado's own lines (an uncaught error) would print the URI with `?token=`."""
    async with served_with(r"/breaks", Breaks) as client:
        with caplog.at_level("DEBUG"):
            answered, body = await api(client, "GET", "/breaks?token=SECRET-IN-QUERY&x=1")
            await api(client, "GET", "/app/%2e%2e/%00?token=SECRET-IN-QUERY")
    assert answered == 500 and body["code"] == "internal"
    assert "Uncaught exception GET /breaks" in caplog.text and "RuntimeError: a bug" in caplog.text
    assert "SECRET-IN-QUERY" not in caplog.text
