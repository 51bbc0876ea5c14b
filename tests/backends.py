"""How tests build a storage of each backend. Adding a backend means adding it here."""
from __future__ import annotations

from pathlib import Path

import pytest

from storage.base import Storage
from storage.jsonfile import JsonOptions, JsonStorage
from storage.memory import MemoryStorage
from storage.sqlite import SqliteOptions, SqliteStorage

BACKENDS = ["memory", "sqlite", "json"]


def make_storage(name: str, tmp_path: Path, request: pytest.FixtureRequest) -> Storage:
    if name == "memory":
        return MemoryStorage()
    if name == "sqlite":
        return SqliteStorage(SqliteOptions(path=tmp_path / "calsync.db"))
    if name == "json":
        return JsonStorage(JsonOptions(path=tmp_path / "json"))
    raise ValueError(f"no test storage for backend {name!r}")
