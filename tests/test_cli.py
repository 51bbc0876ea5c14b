"""The `calsync` command as an operator runs it: real processes, real files, real ports."""
from __future__ import annotations

import asyncio
import json
import shutil
import signal
import socket
import time
import urllib.request
from pathlib import Path

import pytest
import tornado.websocket

from calsync.server.access import Tokens
from tests.process import ServerProcess, assert_one_line_exit_2, http_json, run_cli, write_config

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("text, fragments", [
    ("server:\n  prot: 1\n", ["calsync.yaml: server.prot: unknown option"]),
    ("server:\n  port: 8000\n   host: x\n", ["calsync.yaml: YAML error at line 3"]),
    ("server:\n  port: [1]\n", ["calsync.yaml: server.port: expected an integer"]),
    ("server:\n  port: ${CALSYNC_TEST_UNSET_VAR}\n", ["server.port", "CALSYNC_TEST_UNSET_VAR"]),
    ("storage:\n  backend: mongo\n", ["storage.backend", "mongo", "dynamodb, json, memory, sqlite"]),
])
@pytest.mark.parametrize("command", ["serve", "create-tables"])
def test_bad_config_is_one_line_and_status_2(tmp_path, text, fragments, command):
    config = write_config(tmp_path, text)
    assert_one_line_exit_2(run_cli(command, "--config", str(config)), *fragments)


def test_missing_config_file(tmp_path):
    assert_one_line_exit_2(run_cli("serve", cwd=tmp_path), "calsync.yaml: config file not found")
    assert_one_line_exit_2(run_cli("serve", "--config", str(tmp_path / "x.yaml")), "x.yaml: config file not found")


@pytest.mark.parametrize("args", [[], ["bogus"], ["serve", "--port", "abc"], ["serve", "--port", "70000"],
                                  ["serve", "--nope"]])
def test_bad_arguments_are_one_line_and_status_2(tmp_path, args):
    write_config(tmp_path, "storage:\n  backend: memory\n")
    assert_one_line_exit_2(run_cli(*args, cwd=tmp_path))


def test_default_config_starts_on_a_fresh_folder(tmp_path):
    shutil.copy(REPO / "calsync.yaml", tmp_path / "calsync.yaml")
    server = ServerProcess(tmp_path / "calsync.yaml")
    try:
        status, body = http_json(server.url + "/")
        assert (status, body["status"], body["storage"]) == (200, "running", "sqlite")
        assert http_json(server.url + "/ready")[0] == 200
        assert (tmp_path / "data" / "calsync.db").is_file()
    finally:
        assert server.stop() == 0


@pytest.mark.parametrize("backend", ["sqlite", "json"])
def test_data_survives_restart(tmp_path, backend):
    config = write_config(tmp_path, f"storage:\n  backend: {backend}\n")
    server = ServerProcess(config)
    try:
        _, body = http_json(server.url + "/api/departments", "POST", {"name": "개발팀"})
        department = body["department"]
        _, body = http_json(server.url + f"/api/events/{department['id']}", "POST",
                            {"event_date": "2024-01-20", "title": "팀 회의"})
        event = body["event"]
    finally:
        assert server.stop() == 0
    server = ServerProcess(config)
    try:
        assert http_json(server.url + "/api/departments")[1]["departments"] == [{**department, "seq": 1}]
        listed = http_json(server.url + f"/api/events/{department['id']}")[1]
        assert (listed["events"], listed["seq"], listed["epoch"]) == ([event], 1, department["epoch"])
    finally:
        assert server.stop(signal.SIGINT) == 0


async def test_shutdown_closes_websockets_with_1001(tmp_path):
    server = ServerProcess(write_config(tmp_path, "storage:\n  backend: sqlite\n"))
    try:
        connection = await tornado.websocket.websocket_connect(server.ws_url)
        assert json.loads(await connection.read_message())["event"] == "connected"
        server.process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(connection.read_message(), 10) is None
        assert connection.close_code == 1001
        assert await asyncio.get_running_loop().run_in_executor(None, server.wait_exit) == 0
        assert "Traceback" not in server.output
    finally:
        server.kill()


def test_port_in_use(tmp_path):
    config = write_config(tmp_path, "storage:\n  backend: memory\n")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert_one_line_exit_2(run_cli("serve", "--config", str(config), "--port", str(port)),
                               f"cannot listen on 127.0.0.1:{port}")


def test_unusable_storage_folder(tmp_path):
    (tmp_path / "file").write_text("not a folder")
    config = write_config(tmp_path, "storage:\n  sqlite:\n    path: file/data/calsync.db\n")
    assert_one_line_exit_2(run_cli("serve", "--config", str(config)), "cannot open SQLite database")
    config = write_config(tmp_path, "storage:\n  backend: json\n  json:\n    path: file/json\n")
    assert_one_line_exit_2(run_cli("serve", "--config", str(config)), "cannot use JSON folder")


def test_json_folder_is_locked_against_a_second_server(tmp_path):
    config = write_config(tmp_path, "storage:\n  backend: json\n")
    server = ServerProcess(config)
    try:
        assert_one_line_exit_2(run_cli("serve", "--config", str(config), "--port", "0"),
                               "is in use by another calsync process")
    finally:
        assert server.stop() == 0
    server = ServerProcess(config)  # the lock goes with the process
    assert server.stop() == 0


def test_json_store_with_a_broken_file_refuses_to_start(tmp_path):
    config = write_config(tmp_path, "storage:\n  backend: json\n")
    (tmp_path / "data" / "json").mkdir(parents=True)
    (tmp_path / "data" / "json" / "departments.json").write_text("{oops")
    assert_one_line_exit_2(run_cli("serve", "--config", str(config)), "departments.json: not a calsync JSON file")


@pytest.mark.parametrize("backend, made", [("sqlite", "data/calsync.db"), ("json", "data/json/events")])
def test_create_tables_embedded(tmp_path, backend, made):
    config = write_config(tmp_path, f"storage:\n  backend: {backend}\n")
    first = run_cli("create-tables", "--config", str(config))
    assert first.returncode == 0 and "created" in first.stdout, first
    assert (tmp_path / made).exists()
    second = run_cli("create-tables", "--config", str(config))
    assert second.returncode == 0 and "checked" in second.stdout, second


def test_python_dash_m_calsync_is_the_command():
    result = run_cli("--version")
    assert result.returncode == 0 and result.stdout.startswith("calsync ")


def test_expired_tombstones_are_purged_at_start(tmp_path):
    config = write_config(tmp_path, "storage:\n  backend: sqlite\nsync:\n  tombstone_days: 0.00001\n")  # 0.9 s
    server = ServerProcess(config)
    try:
        _, body = http_json(server.url + "/api/departments", "POST", {"name": "개발팀"})
        department = body["department"]
        _, body = http_json(server.url + f"/api/events/{department['id']}", "POST",
                            {"event_date": "2024-01-20", "title": "지울 회의"})
        http_json(server.url + f"/api/events/{body['event']['id']}", "DELETE")
        cursor = f"?since=0&epoch={department['epoch']}"
        assert http_json(server.url + f"/api/events/{department['id']}{cursor}")[1]["deleted"] != []
    finally:
        assert server.stop() == 0
    time.sleep(1.0)
    server = ServerProcess(config)
    try:
        assert "purged 1 expired tombstones" in server.output
        answer = http_json(server.url + f"/api/events/{department['id']}{cursor}")[1]
        assert (answer["reset"], answer["deleted"], answer["seq"]) == (True, [], 2)
    finally:
        assert server.stop() == 0


def test_token_issue_command_and_logs_without_tokens(tmp_path):
    secret = "an-office-secret-of-at-least-32-characters"
    config = write_config(tmp_path, f"auth:\n  mode: token\n  secret: {secret}\nstorage:\n  backend: sqlite\n")
    issued = run_cli("token", "issue", "--role", "admin", "--subject", "운영자", "--ttl", "1h", "--config", str(config))
    assert issued.returncode == 0 and issued.stderr == ""
    token = issued.stdout.strip()
    grant = Tokens(secret).verify(token)
    assert (grant.sub, grant.role, grant.departments) == ("운영자", "admin", None)
    assert 3500 < grant.expires_at - time.time() <= 3600
    short = write_config(tmp_path, "auth:\n  mode: token\n  secret: short\n", "short.yaml")
    refused = run_cli("serve", "--config", str(short))
    assert refused.returncode == 2 and "auth: secret must be at least 32 characters" in refused.stderr
    assert "short" not in refused.stderr.replace("short.yaml", "")

    server = ServerProcess(config)
    try:
        request = urllib.request.Request(server.url + "/api/departments", headers={"Authorization": f"Bearer {token}"})
        with urllib.request.urlopen(request, timeout=10) as response:
            assert response.status == 200
        assert http_json(server.url + f"/api/departments?token={token}")[0] == 401  # REST takes the header only
    finally:
        assert server.stop() == 0
    assert token not in server.output and secret not in server.output
    assert "GET /api/departments 200" in server.output and "sub=운영자" in server.output
