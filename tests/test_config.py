"""Loading `calsync.yaml`: defaults, interpolation, types, and one clear line per mistake."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from calsync.server.config import ConfigError, load_config
from calsync.storage.jsonfile import JsonStorage
from calsync.storage.memory import MemoryStorage
from calsync.storage.sqlite import SqliteStorage


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch):
    """Each test gets its own copy of the environment (a .env file writes into it)."""
    environment = {k: v for k, v in os.environ.items() if not k.startswith(("CALSYNC", "AWS_", "DYNAMODB", "PORT"))}
    monkeypatch.setattr(os, "environ", environment)
    return environment


def write(tmp_path: Path, text: str, name: str = "calsync.yaml") -> str:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return str(path)


def error_of(path: str) -> str:
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    message = str(caught.value)
    assert "\n" not in message
    return message


def test_shipped_config_is_the_documented_default():
    config = load_config(str(Path(__file__).parent.parent / "calsync.yaml"))
    assert (config.server.host, config.server.port) == ("127.0.0.1", 8000)
    assert config.server.allowed_origins == () and config.server.max_body_bytes == 1048576
    assert config.server.max_message_bytes == 65536
    assert config.backend == "sqlite" and config.backend_class is SqliteStorage
    assert config.storage_options.path == Path(__file__).parent.parent / "data" / "calsync.db"
    assert (config.server.ping_interval, config.server.ping_timeout) == (20, 30)
    assert (config.sync.tombstone_days, config.sync.idempotency_hours) == (30, 24)
    assert (config.server.shutdown_grace, config.server.log_format, config.server.timezone) == (10, "text", "Asia/Seoul")
    assert config.ics.default_minutes == 60 and config.storage_options.busy_timeout == 5


def test_sync_and_heartbeat_keys(tmp_path, clean_environment, monkeypatch):
    monkeypatch.setenv("DAYS", "0.5")
    config = load_config(str(write(tmp_path, "server:\n  ping_interval: 2.5\n  ping_timeout: 0\n"
                                             "sync:\n  tombstone_days: ${DAYS}\n  idempotency_hours: 1\n")))
    assert (config.server.ping_interval, config.server.ping_timeout) == (2.5, 0)
    assert (config.sync.tombstone_seconds, config.sync.idempotency_seconds) == (43200, 3600)


def test_empty_file_means_defaults(tmp_path):
    config = load_config(write(tmp_path, ""))
    assert config.server.port == 8000 and config.backend == "sqlite"
    assert config.storage_options.path == tmp_path / "data" / "calsync.db"


def test_relative_paths_are_relative_to_the_file(tmp_path):
    (tmp_path / "conf").mkdir()
    path = write(tmp_path / "conf", "storage:\n  backend: json\n  json:\n    path: ../store\n")
    config = load_config(path)
    assert config.backend_class is JsonStorage
    assert config.storage_options.path.resolve() == (tmp_path / "store").resolve()


def test_interpolation_and_type_conversion(tmp_path, clean_environment):
    clean_environment.update({"CALSYNC_PORT": "9001", "ORIGINS": "https://a.example, https://b.example"})
    path = write(tmp_path, (
        "server:\n"
        "  port: ${CALSYNC_PORT}\n"
        "  max_body_bytes: ${BODY_LIMIT:-2048}\n"
        "  allowed_origins: ${ORIGINS}\n"
        "  host: ${EMPTY_HOST:-0.0.0.0}\n"
        "storage:\n  backend: ${BACKEND:-memory}\n"
    ))
    clean_environment["EMPTY_HOST"] = ""  # empty counts as unset for :-, as in a shell
    config = load_config(path)
    assert config.server.port == 9001 and config.server.max_body_bytes == 2048
    assert config.server.allowed_origins == ("https://a.example", "https://b.example")
    assert config.server.host == "0.0.0.0" and config.backend_class is MemoryStorage


def test_env_file_is_read_and_environment_wins(tmp_path, clean_environment):
    (tmp_path / ".env").write_text("# comment\nexport CALSYNC_PORT=9100\nCALSYNC_HOST='0.0.0.0'\nCALSYNC_DIR=fromfile\n")
    clean_environment["CALSYNC_DIR"] = "fromenv"
    path = write(tmp_path, "server:\n  port: ${CALSYNC_PORT}\n  host: ${CALSYNC_HOST}\n"
                           "storage:\n  sqlite:\n    path: ${CALSYNC_DIR}/db.sqlite\n")
    config = load_config(path)
    assert (config.server.port, config.server.host) == (9100, "0.0.0.0")
    assert config.storage_options.path == tmp_path / "fromenv" / "db.sqlite"


def test_config_named_by_environment(tmp_path, clean_environment, monkeypatch):
    clean_environment["CALSYNC_CONFIG"] = write(tmp_path, "server:\n  port: 1234\n", "other.yaml")
    monkeypatch.chdir(tmp_path)
    assert load_config().server.port == 1234


@pytest.mark.parametrize("text, expected", [
    ("server:\n  prot: 1\n", "calsync.yaml: server.prot: unknown option"),
    ("serve:\n  port: 1\n", "calsync.yaml: serve: unknown option"),
    ("storage:\n  sqlite:\n    paht: x\n", "calsync.yaml: storage.sqlite.paht: unknown option"),
    ("storage:\n  json:\n    path: x\n    extra: 1\n", "calsync.yaml: storage.json.extra: unknown option"),
    ("storage:\n  mongo: {}\n", "calsync.yaml: storage.mongo: unknown option"),
    ("server:\n  port: eighty\n", "calsync.yaml: server.port: expected an integer, got 'eighty'"),
    ("server:\n  port: 70000\n", "calsync.yaml: server.port: must be between 0 and 65535, got 70000"),
    ("server:\n  port: true\n", "calsync.yaml: server.port: expected an integer, got True"),
    ("server:\n  max_body_bytes: 0\n", "calsync.yaml: server.max_body_bytes: must be at least 1, got 0"),
    ("server:\n  host: [a]\n", "calsync.yaml: server.host: expected a string, got a list"),
    ("server:\n  allowed_origins: [1]\n", "calsync.yaml: server.allowed_origins: expected a list of strings, got a list"),
    ("server: 5\n", "calsync.yaml: server: expected a mapping of options, got 5"),
    ("- a\n- b\n", "calsync.yaml: expected a mapping of options, got a list"),
    ("sync:\n  tombstone_days: soon\n", "calsync.yaml: sync.tombstone_days: expected a number, got 'soon'"),
    ("sync:\n  idempotency_hours: -1\n", "calsync.yaml: sync.idempotency_hours: must be at least 0, got -1"),
    ("sync:\n  tombstones: 3\n", "calsync.yaml: sync.tombstones: unknown option"),
    ("server:\n  ping_interval: .nan\n", "calsync.yaml: server.ping_interval: expected a number, got nan"),
    ("server:\n  ping_timeout: true\n", "calsync.yaml: server.ping_timeout: expected a number, got True"),
    ("server:\n  shutdown_grace: -1\n", "calsync.yaml: server.shutdown_grace: must be at least 0, got -1"),
    ("server:\n  idle_timeout: 0\n", "calsync.yaml: server.idle_timeout: must be at least 0.1, got 0"),
    ("server:\n  body_timeout: soon\n", "calsync.yaml: server.body_timeout: expected a number, got 'soon'"),
    ("server:\n  log_format: xml\n", "calsync.yaml: server: log_format must be text or json, got 'xml'"),
    ("server:\n  timezone: Mars/Olympus\n", "calsync.yaml: server: timezone: unknown time zone 'Mars/Olympus'"),
    ("ics:\n  default_minutes: 0\n", "calsync.yaml: ics.default_minutes: must be between 1 and 1440, got 0"),
    ("ics:\n  minutes: 5\n", "calsync.yaml: ics.minutes: unknown option"),
    ("storage:\n  sqlite:\n    busy_timeout: -2\n", "calsync.yaml: storage.sqlite.busy_timeout: must be at least 0"),
    ("server:\n  port: ${NOT_SET_ANYWHERE}\n",
     "calsync.yaml: server.port: environment variable NOT_SET_ANYWHERE is not set"),
])
def test_bad_config_names_file_and_key(tmp_path, text, expected):
    assert error_of(write(tmp_path, text)).replace(str(tmp_path) + "/", "").startswith(expected)


def test_yaml_error_names_the_line(tmp_path):
    message = error_of(write(tmp_path, "server:\n  port: 8000\n   host: x\n"))
    assert message.startswith(f"{tmp_path}/calsync.yaml: YAML error at line 3")


def test_missing_file(tmp_path):
    assert error_of(str(tmp_path / "nope.yaml")).startswith(f"{tmp_path}/nope.yaml: config file not found")


def test_unknown_backend_lists_known_names(tmp_path):
    message = error_of(write(tmp_path, "storage:\n  backend: mongo\n"))
    assert "storage.backend: unknown storage backend 'mongo'" in message
    for name in ("json", "memory", "sqlite"):
        assert name in message


def test_backend_named_as_module_and_class(tmp_path):
    config = load_config(write(tmp_path, "storage:\n  backend: calsync.storage.memory:MemoryStorage\n"))
    assert config.backend_class is MemoryStorage
    assert "is not a calsync Storage class" in error_of(write(tmp_path, "storage:\n  backend: pathlib:Path\n"))
    assert "cannot import" in error_of(write(tmp_path, "storage:\n  backend: no_such_module:Thing\n"))
    assert "has no class" in error_of(write(tmp_path, "storage:\n  backend: calsync.storage.memory:Nope\n"))
