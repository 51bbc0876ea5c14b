"""How tests build a storage of each backend. Adding a backend means adding it here.

`dynamodb` runs against moto in-process (`mock_aws`); `dynamodb-http` against moto's
server mode on a loopback port, through `endpoint_url`, so the wire path is exercised.
"""
from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest

from calsync.storage.base import Storage
from calsync.storage.dynamodb import DynamoOptions, DynamoStorage
from calsync.storage.jsonfile import JsonOptions, JsonStorage
from calsync.storage.memory import MemoryStorage
from calsync.storage.sqlite import SqliteOptions, SqliteStorage

BACKENDS = ["memory", "sqlite", "json", "dynamodb", "dynamodb-http"]

# Never reach real AWS from a test.
FAKE_AWS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_SESSION_TOKEN": "testing",
            "AWS_DEFAULT_REGION": "ap-northeast-2", "AWS_REGION": "ap-northeast-2"}
os.environ.update(FAKE_AWS)
os.environ.pop("AWS_PROFILE", None)


def dynamo_options(endpoint_url: str = "", **overrides) -> DynamoOptions:
    """Options with fresh table names, so tests sharing one moto server never meet."""
    suffix = uuid.uuid4().hex[:8]
    values = dict(region="ap-northeast-2", endpoint_url=endpoint_url, departments_table=f"departments-{suffix}",
                  events_table=f"events-{suffix}", changes_table=f"changes-{suffix}", max_attempts=2,
                  timeout_seconds=2)
    return DynamoOptions(**{**values, **overrides})


def make_dynamo(options: DynamoOptions) -> DynamoStorage:
    storage = DynamoStorage(options)
    storage.poll_seconds = 0.05
    return storage


def make_storage(name: str, tmp_path: Path, request: pytest.FixtureRequest) -> Storage:
    if name == "memory":
        return MemoryStorage()
    if name == "sqlite":
        return SqliteStorage(SqliteOptions(path=tmp_path / "calsync.db"))
    if name == "json":
        return JsonStorage(JsonOptions(path=tmp_path / "json"))
    if name in ("dynamodb", "dynamodb-http"):
        # One set of tables per test, so a second storage of the test (another "process")
        # shares them with the first.
        options = getattr(request.node, "calsync_dynamo_options", None)
        if options is None:
            if name == "dynamodb":
                request.getfixturevalue("aws_mock")
                options = dynamo_options()
            else:
                options = dynamo_options(request.getfixturevalue("moto_server"))
            request.node.calsync_dynamo_options = options
        return make_dynamo(options)
    raise ValueError(f"no test storage for backend {name!r}")
