"""The tables: options naming them, and checking, creating and waiting for them.

    departments  hash id                      index name-index (hash name)
    events       hash id, range department_id index department-date-index (hash department_id, range event_date)
    <events>_changes  hash department_id, range seq (a number): the change feed (feed.py)

The first two are the original server's tables. The change log's name defaults to the events
table's with `_changes` (contract 7), so two deployments that name only their two tables
never share one; a store made when it was always `changes` keeps using that.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

import botocore.exceptions

from calsync.storage.base import BackendOptions
from calsync.storage.dynamodb.base import DATE_INDEX, NAME_INDEX, DynamoParts
from calsync.storage.dynamodb.items import error_code
from calsync.storage.errors import StorageSetupError

log = logging.getLogger("calsync.dynamodb")

#: Before contract 7 named it after the events table, the change log was always this table.
LEGACY_CHANGES_TABLE = "changes"
CHANGES_SUFFIX = "_changes"
CREDENTIAL_CODES = {"UnrecognizedClientException", "InvalidSignatureException", "ExpiredTokenException",
                    "InvalidClientTokenId", "AccessDeniedException"}


@dataclass(frozen=True)
class DynamoOptions(BackendOptions):
    # Left out of the config file, these come from the environment variable named, when set
    # (read by the config loader at start; built in code, the plain default holds).
    region: str = field(default="ap-northeast-2", metadata={"env": "AWS_REGION"})
    endpoint_url: str = field(default="", metadata={"env": "DYNAMODB_ENDPOINT_URL"})
    departments_table: str = field(default="departments", metadata={"env": "DEPARTMENTS_TABLE"})
    events_table: str = field(default="events", metadata={"env": "EVENTS_TABLE"})
    #: Empty: `<events_table>_changes`, so deployments that name only their two original
    #: tables never share a change log (contract 7).
    changes_table: str = field(default="", metadata={"env": "CHANGES_TABLE"})
    #: PAY_PER_REQUEST (on-demand) or PROVISIONED, used by `create-tables`.
    billing_mode: str = "PAY_PER_REQUEST"
    read_capacity: int = field(default=10, metadata={"min": 1})
    write_capacity: int = field(default=10, metadata={"min": 1})
    #: botocore `standard` retry mode: attempts per call, including the first.
    max_attempts: int = field(default=4, metadata={"min": 1, "max": 20})
    timeout_seconds: int = field(default=5, metadata={"min": 1, "max": 120})
    #: Threads for reads; writes always use one, in order.
    read_threads: int = field(default=8, metadata={"min": 1, "max": 64})
    #: How long `create-tables` waits for tables and indexes to become ACTIVE.
    create_wait_seconds: int = field(default=600, metadata={"min": 1})

    def __post_init__(self) -> None:
        if self.billing_mode not in ("PAY_PER_REQUEST", "PROVISIONED"):
            raise ValueError("billing_mode must be PAY_PER_REQUEST or PROVISIONED")



class TablesPart(DynamoParts):
    """Runs on worker threads: `open` and `create-tables` reach it through the storage."""

    def _open(self) -> None:
        self._keep_legacy_changes_table()
        self._check_tables()

    def _keep_legacy_changes_table(self) -> None:
        """A store made before the change log was named after the events table keeps using
        `changes`, as long as no table of the new name exists and none was named in config."""
        if self.options.changes_table or self._describe(self.changes_table) is not None:
            return
        if self._describe(LEGACY_CHANGES_TABLE) is None:
            return
        log.warning("using the change log table '%s' made by an earlier calsync; the default is now '%s'."
                    " To keep it, set storage.dynamodb.changes_table: %s (or CHANGES_TABLE=%s); a second"
                    " deployment on the same account must name its own", LEGACY_CHANGES_TABLE,
                    self.changes_table, LEGACY_CHANGES_TABLE, LEGACY_CHANGES_TABLE)
        self.changes_table = LEGACY_CHANGES_TABLE

    def _tables(self) -> list[tuple[str, list[tuple[str, str, str]], str | None, list[tuple[str, str, str]]]]:
        """Each table: its name, key (attribute, key type, attribute type), and its index."""
        return [
            (self.departments_table, [("id", "HASH", "S")], NAME_INDEX, [("name", "HASH", "S")]),
            (self.events_table, [("id", "HASH", "S"), ("department_id", "RANGE", "S")], DATE_INDEX,
             [("department_id", "HASH", "S"), ("event_date", "RANGE", "S")]),
            (self.changes_table, [("department_id", "HASH", "S"), ("seq", "RANGE", "N")], None, []),
        ]

    def _check_tables(self) -> None:
        for table, _key, index, _index_key in self._tables():
            description = self._describe(table)
            if description is None:
                raise StorageSetupError(
                    f"DynamoDB table '{table}' does not exist (테이블 '{table}'가 없습니다);"
                    " create the tables with: calsync create-tables"
                )
            indexes = {i["IndexName"] for i in description.get("GlobalSecondaryIndexes", [])}
            if index is not None and index not in indexes:
                raise StorageSetupError(
                    f"DynamoDB table '{table}' has no index '{index}'; add it with: calsync create-tables"
                )

    def _describe(self, table: str) -> dict | None:
        """The table's description, None when it does not exist; setup errors as one line."""
        endpoint = self.options.endpoint_url or f"DynamoDB in {self.options.region}"
        try:
            return self.probe_client.describe_table(TableName=table)["Table"]
        except botocore.exceptions.ClientError as exc:
            code = error_code(exc)
            if code == "ResourceNotFoundException":
                return None
            if code in CREDENTIAL_CODES or exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") == 403:
                raise StorageSetupError(f"{endpoint} rejected the AWS credentials ({code}): check"
                                        " AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, AWS_PROFILE or the IAM policy") from None
            raise StorageSetupError(f"{endpoint}: DescribeTable {table} failed: {code or exc}") from None
        except botocore.exceptions.NoCredentialsError:
            raise StorageSetupError("no AWS credentials found: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY,"
                                    " AWS_PROFILE, or run where an IAM role provides them") from None
        except botocore.exceptions.NoRegionError:
            raise StorageSetupError("no AWS region: set storage.dynamodb.region or AWS_REGION") from None
        except (botocore.exceptions.BotoCoreError, OSError) as exc:
            raise StorageSetupError(f"cannot reach {endpoint}: {exc}") from None

    def _create_tables(self) -> list[str]:
        self._keep_legacy_changes_table()
        said = []
        for table, key, index, index_key in self._tables():
            description = self._describe(table)
            attributes = [{"AttributeName": name, "AttributeType": kind} for name, kind in
                          {name: kind for name, _, kind in key + index_key}.items()]
            index_spec = {
                "IndexName": index,
                "KeySchema": [{"AttributeName": n, "KeyType": t} for n, t, _ in index_key],
                "Projection": {"ProjectionType": "ALL"},
                **self._throughput(),
            }
            indexes = {"GlobalSecondaryIndexes": [index_spec]} if index else {}
            try:
                if description is None:
                    self.probe_client.create_table(
                        TableName=table, AttributeDefinitions=attributes,
                        KeySchema=[{"AttributeName": n, "KeyType": t} for n, t, _ in key],
                        **indexes, **self._billing(),
                    )
                    said.append(f"created table '{table}'" + (f" with index '{index}'" if index else "")
                                + f" ({self.options.billing_mode})")
                elif index and index not in {i["IndexName"] for i in description.get("GlobalSecondaryIndexes", [])}:
                    # The index follows the table's billing: a provisioned table (as the original
                    # README's create-table commands made) needs capacities for it too.
                    billing = description.get("BillingModeSummary", {}).get("BillingMode", "PROVISIONED")
                    if billing == "PROVISIONED":
                        index_spec["ProvisionedThroughput"] = {"ReadCapacityUnits": self.options.read_capacity,
                                                               "WriteCapacityUnits": self.options.write_capacity}
                    else:
                        index_spec.pop("ProvisionedThroughput", None)
                    self.probe_client.update_table(
                        TableName=table, AttributeDefinitions=attributes,
                        GlobalSecondaryIndexUpdates=[{"Create": index_spec}],
                    )
                    said.append(f"table '{table}' exists; added index '{index}'")
                else:
                    said.append(f"table '{table}'" + (f" and index '{index}'" if index else "") + " already exist")
            except botocore.exceptions.ClientError as exc:
                raise StorageSetupError(f"cannot create DynamoDB table '{table}': {exc}") from None
            self._wait_active(table)
        said.append(self._expire_idempotency_keys())
        said.append("all tables and indexes are ACTIVE")
        return said

    def _expire_idempotency_keys(self) -> str:
        """Let DynamoDB's TTL delete idempotency keys past `expires_at` (reads check it too)."""
        try:
            ttl = self.probe_client.describe_time_to_live(TableName=self.departments_table)
            if ttl.get("TimeToLiveDescription", {}).get("TimeToLiveStatus") in ("ENABLED", "ENABLING"):
                return f"table '{self.departments_table}': TTL on 'ttl' already enabled"
            self.probe_client.update_time_to_live(
                TableName=self.departments_table, TimeToLiveSpecification={"Enabled": True, "AttributeName": "ttl"})
        except botocore.exceptions.ClientError as exc:
            return f"table '{self.departments_table}': TTL not enabled ({error_code(exc)}); expired keys are ignored"
        return f"table '{self.departments_table}': enabled TTL on 'ttl' (idempotency keys)"

    def _billing(self) -> dict[str, Any]:
        return {"BillingMode": self.options.billing_mode, **self._throughput()}

    def _throughput(self) -> dict[str, Any]:
        if self.options.billing_mode != "PROVISIONED":
            return {}
        return {"ProvisionedThroughput": {"ReadCapacityUnits": self.options.read_capacity,
                                          "WriteCapacityUnits": self.options.write_capacity}}

    def _wait_active(self, table: str) -> None:
        """Tables and new indexes sit in CREATING for a while on real DynamoDB."""
        deadline = time.monotonic() + self.options.create_wait_seconds
        while True:
            description = self._describe(table) or {}
            statuses = [description.get("TableStatus")] + [
                i.get("IndexStatus") for i in description.get("GlobalSecondaryIndexes", [])]
            if all(status == "ACTIVE" for status in statuses):
                return
            if time.monotonic() > deadline:
                raise StorageSetupError(f"DynamoDB table '{table}' is not ACTIVE after "
                                        f"{self.options.create_wait_seconds} s (status: {statuses})")
            time.sleep(self.poll_seconds)

