"""`dynamodb`: AWS DynamoDB (or any compatible endpoint) through boto3.

Layout, compatible with the tables the original server's README creates, plus one for the
change feed:

    departments  hash id                      index name-index (hash name)
    events       hash id, range department_id index department-date-index (hash department_id, range event_date)
    changes      hash department_id, range seq (a number)

A department name is held by a claim item in `departments` under the id `name#<name>`
(never a UUID, never listed), written with `attribute_not_exists(id)`, so two servers
creating one name at once cannot both win. Idempotency keys live there too, as
`idem#<hash>` items with a TTL attribute `ttl`. No TransactWriteItems: several
DynamoDB-compatible servers lack it.

The feed: a department item counts its changes (`seq`, an atomic ADD); each change is first
written to `changes` under its seq, holding the event as it became (or a delete), and only
then to `events`. The feed is read from `changes` with ConsistentRead — the date index is
only eventually consistent — and answers up to the highest seq below which no change is
missing; a seq a crashed writer never filled is closed with a `noop` item after a wait.

boto3 blocks, so every call runs on threads: writes on one thread, in call order (pushes
follow the order changes were stored), reads on a small pool. Throttling, timeouts and
connection errors that outlast botocore's `standard` retries become `StorageUnavailable`.
"""
from __future__ import annotations

import asyncio
import dataclasses
import decimal
import hashlib
import json
import logging
import math
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable, Collection, Iterator, Mapping, Sequence, TypeVar

import boto3
import botocore.config
import botocore.exceptions
from boto3.dynamodb.types import TypeDeserializer, TypeSerializer

from calsync.storage.base import BackendOptions
from calsync.storage.book import check_versions
from calsync.storage.errors import (
    DepartmentNotFound,
    DuplicateDepartmentName,
    EventNotFound,
    IdempotencyInProgress,
    StorageSetupError,
    StorageUnavailable,
)
from calsync.storage.feed import (
    Change,
    Cursor,
    FeedPage,
    FeedState,
    IdempotencyKey,
    Kind,
    StoredCreate,
    Tombstone,
    changes_page,
    full_page,
)
from calsync.storage.records import Department, Event, import_outcome, new_epoch
from calsync.storage.threaded import ThreadedStorage

log = logging.getLogger("calsync.dynamodb")
T = TypeVar("T")

NAME_INDEX = "name-index"
DATE_INDEX = "department-date-index"
#: A name claim this young whose department is not there yet belongs to a create in progress.
CLAIM_GRACE_SECONDS = 30.0
CLAIM_PREFIX = "name#"
IDEMPOTENCY_PREFIX = "idem#"
PENDING_SECONDS = 60  # a create that held its idempotency key this long without finishing has died
#: Before contract 7 named it after the events table, the change log was always this table.
LEGACY_CHANGES_TABLE = "changes"
CHANGES_SUFFIX = "_changes"
HOLE_WAIT_SECONDS = 2.0  # how long a reader waits for a missing seq before closing it with a noop
BATCH_SIZE = 25  # BatchWriteItem's limit
MAX_KEY_BYTES = 1024  # DynamoDB refuses partition keys over 2,048 bytes (ValidationException)
UPDATE_ATTEMPTS = 10
# Errors that mean "DynamoDB cannot answer now", after botocore's own retries.
UNAVAILABLE_CODES = {
    "ProvisionedThroughputExceededException", "ThrottlingException", "RequestLimitExceeded",
    "InternalServerError", "ServiceUnavailable", "ResourceNotFoundException", "LimitExceededException",
    "UnrecognizedClientException", "InvalidSignatureException", "AccessDeniedException",
    "ExpiredTokenException", "TransactionInProgressException",
}
CREDENTIAL_CODES = {"UnrecognizedClientException", "InvalidSignatureException", "ExpiredTokenException",
                    "InvalidClientTokenId", "AccessDeniedException"}

_serializer = TypeSerializer()
_deserializer = TypeDeserializer()


def _plain(value: Any) -> Any:
    """Decimals back to int (or float), inside maps too."""
    if isinstance(value, decimal.Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def to_item(record: Mapping[str, Any]) -> dict[str, Any]:
    return {k: _serializer.serialize(decimal.Decimal(repr(v)) if isinstance(v, float) else v)
            for k, v in record.items()}


def from_item(item: Mapping[str, Any]) -> dict[str, Any]:
    """A DynamoDB item as plain Python; numbers come back as `int` (never `Decimal`)."""
    return {k: _plain(_deserializer.deserialize(v)) for k, v in item.items()}


def _possible_key(value: str) -> bool:
    """Ids are UUIDs; anything DynamoDB would refuse as a key (over 2 KB) cannot be stored."""
    return 0 < len(value.encode("utf-8")) <= MAX_KEY_BYTES


def error_code(exc: BaseException) -> str:
    return exc.response.get("Error", {}).get("Code", "") if isinstance(exc, botocore.exceptions.ClientError) else ""


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


class DynamoStorage(ThreadedStorage):
    options_class = DynamoOptions
    options: DynamoOptions
    poll_seconds = 2.0  # between DescribeTable calls while create-tables waits

    def __init__(self, options: DynamoOptions) -> None:
        super().__init__(options)
        self._readers = ThreadPoolExecutor(options.read_threads, thread_name_prefix="calsync-dynamodb-read")
        session = boto3.session.Session()
        common = dict(region_name=options.region or None, endpoint_url=options.endpoint_url or None)
        self.client = session.client("dynamodb", **common, config=botocore.config.Config(
            retries={"mode": "standard", "max_attempts": options.max_attempts},
            connect_timeout=options.timeout_seconds, read_timeout=options.timeout_seconds,
            max_pool_connections=options.read_threads + 2,
        ))
        # For health checks and start-up checks: one attempt, short timeouts, so an outage is
        # reported in seconds instead of sitting in retries.
        self.probe_client = session.client("dynamodb", **common, config=botocore.config.Config(
            retries={"mode": "standard", "max_attempts": 1}, connect_timeout=2, read_timeout=2,
        ))
        self.departments_table = options.departments_table
        self.events_table = options.events_table
        self.changes_table = options.changes_table or f"{options.events_table}{CHANGES_SUFFIX}"
        self._fed: set[str] = set()  # departments whose feed this process has seen started

    def describe(self) -> str:
        where = self.options.endpoint_url or f"AWS {self.options.region}"
        return f"dynamodb ({where}: {self.departments_table}, {self.events_table}, {self.changes_table})"

    # -- running boto3 off the IOLoop -------------------------------------------------------
    async def _write(self, fn: Callable[[], T]) -> T:
        return await self.run(self._guarded, fn)

    async def _read(self, fn: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._readers, self._guarded, fn)

    @staticmethod
    def _guarded(fn: Callable[[], T]) -> T:
        try:
            return fn()
        except botocore.exceptions.ClientError as exc:
            if error_code(exc) in UNAVAILABLE_CODES:
                log.warning("DynamoDB unavailable: %s", exc)
                raise StorageUnavailable() from None
            raise
        except (botocore.exceptions.BotoCoreError, OSError) as exc:
            # Connection refused or reset, timeouts, no credentials: nothing was changed
            # that the caller will be told about; the request can be retried.
            log.warning("DynamoDB unreachable: %s", exc)
            raise StorageUnavailable() from None

    # -- life cycle -----------------------------------------------------------------------
    async def open(self) -> None:
        await asyncio.get_running_loop().run_in_executor(self._readers, self._open)

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

    async def create_tables(self) -> list[str]:
        return await asyncio.get_running_loop().run_in_executor(self._readers, self._create_tables)

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

    async def ping(self) -> None:
        def probe() -> None:
            self.probe_client.describe_table(TableName=self.departments_table)

        await self._read(probe)

    async def close(self) -> None:
        await self.shutdown_threads(self._readers)

    # -- low-level helpers (run on worker threads) -------------------------------------------
    def _pages(self, operation: str, **kwargs: Any) -> Iterator[dict[str, Any]]:
        """Every item of a Query or Scan, following LastEvaluatedKey to the end."""
        call = getattr(self.client, operation)
        while True:
            page = call(**kwargs)
            for item in page.get("Items", []):
                yield from_item(item)
            if "LastEvaluatedKey" not in page:
                return
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    def _department_item(self, department_id: str) -> dict[str, Any]:
        if department_id.startswith((CLAIM_PREFIX, IDEMPOTENCY_PREFIX)) or not _possible_key(department_id):
            raise DepartmentNotFound()
        item = self.client.get_item(TableName=self.departments_table, Key=to_item({"id": department_id}),
                                    ConsistentRead=True).get("Item")
        if item is None:
            raise DepartmentNotFound()
        return from_item(item)

    def _get_department(self, department_id: str) -> Department:
        return Department.from_dict(self._department_item(department_id))

    def _get_event(self, event_id: str) -> Event:
        if not _possible_key(event_id):
            raise EventNotFound()
        items = list(self._pages("query", TableName=self.events_table, ConsistentRead=True,
                                 KeyConditionExpression="id = :id", ExpressionAttributeValues=to_item({":id": event_id})))
        if not items:
            raise EventNotFound()
        return Event.from_dict(items[0])

    def _event_ids(self, department_id: str) -> list[dict[str, Any]]:
        return [{"id": item["id"], "department_id": department_id} for item in self._pages(
            "query", TableName=self.events_table, IndexName=DATE_INDEX, ProjectionExpression="id",
            KeyConditionExpression="department_id = :d", ExpressionAttributeValues=to_item({":d": department_id}))]

    @staticmethod
    def _until_processed(call: Callable[..., dict], requests: dict[str, Any], leftover: str) -> Iterator[dict]:
        """Call a batch API until it leaves nothing unprocessed, backing off between tries;
        yield every response. DynamoDB hands back what it could not do under load."""
        for attempt in range(12):
            response = call(RequestItems=requests)
            yield response
            requests = response.get(leftover) or {}
            if not requests:
                return
            time.sleep(min(0.05 * 2 ** attempt, 2.0))
        raise StorageUnavailable()

    def _batch_write(self, table: str, requests: list[dict[str, Any]]) -> None:
        """BatchWriteItem in chunks of 25, retrying UnprocessedItems."""
        for start in range(0, len(requests), BATCH_SIZE):
            for _ in self._until_processed(self.client.batch_write_item, {table: requests[start:start + BATCH_SIZE]},
                                           "UnprocessedItems"):
                pass

    def _claim_name(self, name: str, department_id: str) -> None:
        """Take the name for `department_id`, or raise `DuplicateDepartmentName`.

        A claim whose department does not exist is either a create still on its way (the
        claim is written first) or one cut short by a crash. Younger than
        `CLAIM_GRACE_SECONDS` it is taken to be on its way and the name is taken; older, it
        is stale: it is removed and the claim tried again.
        """
        claim = to_item({"id": CLAIM_PREFIX + name, "department_id": department_id, "claimed_at": self.clock()})
        for _ in range(3):
            try:
                self.client.put_item(TableName=self.departments_table, Item=claim,
                                     ConditionExpression="attribute_not_exists(id) OR department_id = :mine",
                                     ExpressionAttributeValues=to_item({":mine": department_id}))
                return
            except botocore.exceptions.ClientError as exc:
                if error_code(exc) != "ConditionalCheckFailedException":
                    raise
            holder = self.client.get_item(TableName=self.departments_table, ConsistentRead=True,
                                          Key=to_item({"id": CLAIM_PREFIX + name})).get("Item")
            if holder is None:
                continue
            holder = from_item(holder)
            holder_id = holder["department_id"]
            try:
                if self._get_department(holder_id).name == name:
                    raise DuplicateDepartmentName()
            except DepartmentNotFound:
                if float(holder.get("claimed_at", 0)) > self.clock() - CLAIM_GRACE_SECONDS:
                    raise DuplicateDepartmentName() from None  # another create, still on its way
            self._release_name(name, holder_id)
        raise DuplicateDepartmentName()

    def _release_name(self, name: str, department_id: str) -> None:
        try:
            self.client.delete_item(TableName=self.departments_table, Key=to_item({"id": CLAIM_PREFIX + name}),
                                    ConditionExpression="department_id = :mine",
                                    ExpressionAttributeValues=to_item({":mine": department_id}))
        except botocore.exceptions.ClientError as exc:
            if error_code(exc) != "ConditionalCheckFailedException":
                raise

    # -- idempotency keys (items in the departments table) ---------------------------------
    def _idempotency_id(self, key: IdempotencyKey) -> dict[str, Any]:
        return to_item({"id": IDEMPOTENCY_PREFIX + hashlib.sha256(key.name.encode("utf-8")).hexdigest()})

    def _claim_key(self, key: IdempotencyKey) -> StoredCreate | None:
        """Hold `key` for a create about to run, or return the create kept under it.

        The hold is a conditional put, so of two processes retrying one create at once only
        one runs it; the other is told it is in progress (a repeat in this process waits its
        turn on the writer thread and is replayed).
        """
        item_key = self._idempotency_id(key)
        now = self.clock()
        for _ in range(3):
            try:
                self.client.put_item(
                    TableName=self.departments_table,
                    Item={**item_key, **to_item({"state": "pending", "fingerprint": key.fingerprint,
                                                 "started_at": now, "expires_at": key.expires_at(now),
                                                 "ttl": math.ceil(key.expires_at(now))})},
                    ConditionExpression="attribute_not_exists(id) OR expires_at < :now"
                                        " OR (#state = :pending AND started_at < :stale)",
                    ExpressionAttributeNames={"#state": "state"},
                    ExpressionAttributeValues=to_item({":now": now, ":pending": "pending",
                                                       ":stale": now - PENDING_SECONDS}))
                return None
            except botocore.exceptions.ClientError as exc:
                if error_code(exc) != "ConditionalCheckFailedException":
                    raise
            item = self.client.get_item(TableName=self.departments_table, Key=item_key, ConsistentRead=True).get("Item")
            if item is None:
                continue  # released meanwhile: try again
            held = from_item(item)
            if held["state"] == "pending":
                if held["fingerprint"] != key.fingerprint:
                    StoredCreate(held["fingerprint"], "", {}, 0).replay(key)  # raises the mismatch
                raise IdempotencyInProgress()
            return StoredCreate(held["fingerprint"], held["kind"], json.loads(held["record"]), held["expires_at"])
        raise IdempotencyInProgress()

    def _settle_key(self, key: IdempotencyKey, change: Change) -> None:
        stored = StoredCreate.of(key, change, self.clock())
        self.client.update_item(
            TableName=self.departments_table, Key=self._idempotency_id(key),
            UpdateExpression="SET #state = :done, kind = :kind, #record = :record",
            ExpressionAttributeNames={"#state": "state", "#record": "record"},
            ExpressionAttributeValues=to_item({":done": "done", ":kind": stored.kind,
                                               ":record": json.dumps(stored.record, ensure_ascii=False)}))

    def _release_key(self, key: IdempotencyKey) -> None:
        """A create that failed keeps no key: the client may retry it."""
        try:
            self.client.delete_item(TableName=self.departments_table, Key=self._idempotency_id(key),
                                    ConditionExpression="#state = :pending", ExpressionAttributeNames={"#state": "state"},
                                    ExpressionAttributeValues=to_item({":pending": "pending"}))
        except botocore.exceptions.ClientError as exc:
            if error_code(exc) != "ConditionalCheckFailedException":
                raise

    def _idempotent(self, key: IdempotencyKey | None, create: Callable[[], Change]) -> Change:
        """Run `create` under `key`: replay a kept answer, keep a new one, keep nothing on failure."""
        if key is None:
            return create()
        stored = self._claim_key(key)
        if stored is not None:
            return stored.replay(key)
        try:
            change = create()
        except BaseException:
            self._release_key(key)
            raise
        self._settle_key(key, change)
        return change

    # -- the change feed ------------------------------------------------------------------
    def _take_seq(self, department_id: str, count: int = 1) -> int:
        """Count `count` changes on the department; the last seq taken."""
        try:
            answer = self.client.update_item(
                TableName=self.departments_table, Key=to_item({"id": department_id}),
                UpdateExpression="ADD seq :n", ConditionExpression="attribute_exists(id)",
                ExpressionAttributeValues=to_item({":n": count}), ReturnValues="UPDATED_NEW")
        except botocore.exceptions.ClientError as exc:
            if error_code(exc) == "ConditionalCheckFailedException":
                raise DepartmentNotFound() from None
            raise
        return int(answer["Attributes"]["seq"]["N"])

    def _change_item(self, department_id: str, seq: int, kind: str, event_id: str,
                     event: Event | None = None) -> dict[str, Any]:
        item = {"department_id": department_id, "seq": seq, "kind": kind, "id": event_id, "at": int(self.clock())}
        if event is not None:
            item["record"] = event.to_dict()
        return to_item(item)

    def _record_change(self, department_id: str, kind: str, event_id: str,
                       make: Callable[[int], Event | None]) -> int:
        """Take the next seq and write the change under it; the seq.

        The put is conditional: when a reader has meanwhile closed this seq as a hole (this
        writer was slower than `HOLE_WAIT_SECONDS`), the change takes a later one.
        """
        for _ in range(UPDATE_ATTEMPTS):
            seq = self._take_seq(department_id)
            try:
                self.client.put_item(TableName=self.changes_table,
                                     Item=self._change_item(department_id, seq, kind, event_id, make(seq)),
                                     ConditionExpression="attribute_not_exists(seq)")
                return seq
            except botocore.exceptions.ClientError as exc:
                if error_code(exc) != "ConditionalCheckFailedException":
                    raise
        raise StorageUnavailable()

    def _void_change(self, department_id: str, seq: int, event_id: str) -> None:
        """The write the change announced did not happen (another process won): say so."""
        self.client.put_item(TableName=self.changes_table, Item=self._change_item(department_id, seq, "noop", event_id))

    def _changes(self, department_id: str, after: int) -> list[dict[str, Any]]:
        return list(self._pages("query", TableName=self.changes_table, ConsistentRead=True,
                                KeyConditionExpression="department_id = :d AND seq > :after",
                                ExpressionAttributeValues=to_item({":d": department_id, ":after": after})))

    def _settled_changes(self, department: Department, horizon: int, after: int) -> tuple[list[dict[str, Any]], int]:
        """The changes above `after`, cut before the first seq not yet written, and that top seq.

        A seq is missing while its writer is between counting it and writing it. One that
        stays missing for `HOLE_WAIT_SECONDS` belongs to a writer that died: it is closed
        with a noop so the feed can go on.
        """
        deadline = time.monotonic() + HOLE_WAIT_SECONDS
        while True:
            items = self._changes(department.id, after)
            expected, top = max(after, horizon) + 1, max(after, horizon)
            hole = None
            for item in items:
                if item["seq"] <= top:
                    continue  # below the horizon: live events kept from purged history
                if item["seq"] != expected:
                    hole = expected
                    break
                top = expected
                expected += 1
            if hole is None:
                return [item for item in items if item["seq"] <= top], top
            if time.monotonic() > deadline:
                try:
                    self.client.put_item(TableName=self.changes_table,
                                         Item=self._change_item(department.id, hole, "noop", ""),
                                         ConditionExpression="attribute_not_exists(seq)")
                except botocore.exceptions.ClientError as exc:
                    if error_code(exc) != "ConditionalCheckFailedException":
                        raise
            else:
                time.sleep(0.05)

    def _feed_department(self, department_id: str) -> tuple[Department, int]:
        """The department and its horizon, from one consistent read."""
        item = self._department_item(department_id)
        return Department.from_dict(item), int(item.get("horizon", 0))

    def _read_feed(self, department_id: str, cursor: Cursor | None, limit: int | None) -> FeedPage:
        """One consistent answer: retried when a purge raised the horizon while it was read."""
        while True:
            department, horizon = self._feed_department(department_id)
            usable = cursor is not None and cursor.usable(FeedState(department.epoch, department.seq, horizon))
            items, top = self._settled_changes(department, horizon, cursor.since if cursor is not None and usable else 0)
            if self._feed_department(department_id)[1] != horizon:
                continue
            state = FeedState(department.epoch, top, horizon)
            latest: dict[str, dict[str, Any]] = {}
            for item in items:  # in seq order: the last one of an event is what it is now
                if item["kind"] != "noop":
                    latest[item["id"]] = item
            events = [Event.from_dict(item["record"]) for item in latest.values() if item["kind"] == "put"]
            if cursor is None or not usable:
                return full_page(department_id, state, events)
            tombstones = [Tombstone(item["id"], item["seq"]) for item in latest.values() if item["kind"] == "delete"]
            return changes_page(department_id, state, cursor.since, events, tombstones, limit)

    def _write_as_changes(self, department_id: str, events: list[Event]) -> None:
        """Write `events` as the department's next changes: one block of seqs, the change
        items first, then the events (bulk paths: starting a feed, importing)."""
        if not events:
            return
        first = self._take_seq(department_id, len(events)) - len(events) + 1
        events = [dataclasses.replace(e, seq=first + n) for n, e in enumerate(events)]
        self._batch_write(self.changes_table, [{"PutRequest": {"Item": self._change_item(
            department_id, e.seq, "put", e.id, e)}} for e in events])
        self._batch_write(self.events_table, [{"PutRequest": {"Item": to_item(e.to_dict())}} for e in events])

    def _ensure_feed(self, department_id: str) -> None:
        """A department stored before the feed existed: its events become the feed's first
        changes (on the writer thread: it writes). A feed once started stays, so each
        department is looked at once per process."""
        if department_id in self._fed:
            return
        department = self._get_department(department_id)
        if not department.epoch:
            events = [Event.from_dict(item) for item in self._pages(
                "query", TableName=self.events_table, IndexName=DATE_INDEX,
                KeyConditionExpression="department_id = :d", ExpressionAttributeValues=to_item({":d": department_id}))]
            self._write_as_changes(department_id, sorted(events, key=lambda e: (e.created_at, e.id)))
            self.client.update_item(TableName=self.departments_table, Key=to_item({"id": department_id}),
                                    UpdateExpression="SET epoch = :epoch, seq = if_not_exists(seq, :zero),"
                                                     " horizon = if_not_exists(horizon, :zero)",
                                    ExpressionAttributeValues=to_item({":epoch": new_epoch(), ":zero": 0}))
        self._fed.add(department_id)

    async def _with_feed(self, department_id: str) -> None:
        """For reads: start the department's feed on the writer first, if it may have none."""
        if department_id not in self._fed:
            await self._write(lambda: self._ensure_feed(department_id))

    async def feed_state(self, department_id: str) -> FeedState:
        await self._with_feed(department_id)

        def state() -> FeedState:
            department, horizon = self._feed_department(department_id)
            seq = department.seq
            if seq > horizon and "Item" not in self.client.get_item(
                    TableName=self.changes_table, Key=to_item({"department_id": department_id, "seq": seq}),
                    ConsistentRead=True, ProjectionExpression="seq"):
                seq -= 1  # counted, not yet written: that change is still in flight
            return FeedState(department.epoch, seq, horizon)

        return await self._read(state)

    async def read_feed(self, department_id: str, cursor: Cursor | None = None,
                        limit: int | None = None) -> FeedPage:
        await self._with_feed(department_id)
        return await self._read(lambda: self._read_feed(department_id, cursor, limit))

    async def purge(self, tombstone_seconds: float) -> int:
        def purge() -> int:
            cutoff = self.clock() - tombstone_seconds
            purged = 0
            for department in self._list_departments():
                purged += self._purge_department(department.id, cutoff)
            return purged

        return await self._write(purge)

    def _purge_department(self, department_id: str, cutoff: float) -> int:
        """Drop history older than `cutoff` that no answer needs: tombstones, noops, and
        changes a later change of the same event replaced. The horizon is raised first, so a
        reader that overlaps the deletes sees it move and reads again."""
        items = self._changes(department_id, 0)
        latest = {item["id"]: item["seq"] for item in items if item["kind"] != "noop"}
        old = [item for item in items if item["at"] < cutoff]
        gone = [item for item in old if item["kind"] != "put" or latest[item["id"]] != item["seq"]]
        if not gone:
            return 0
        horizon = max(item["seq"] for item in gone)
        try:
            self.client.update_item(TableName=self.departments_table, Key=to_item({"id": department_id}),
                                    UpdateExpression="SET horizon = :h",
                                    ConditionExpression="attribute_exists(id) AND (attribute_not_exists(horizon)"
                                                        " OR horizon < :h)",
                                    ExpressionAttributeValues=to_item({":h": horizon}))
        except botocore.exceptions.ClientError as exc:
            if error_code(exc) != "ConditionalCheckFailedException":
                raise
        self._batch_write(self.changes_table, [{"DeleteRequest": {"Key": to_item(
            {"department_id": department_id, "seq": item["seq"]})}} for item in gone])
        return sum(1 for item in gone if item["kind"] == "delete")

    # -- departments ----------------------------------------------------------------------
    def _list_departments(self) -> list[Department]:
        items = self._pages("scan", TableName=self.departments_table,
                            FilterExpression="NOT begins_with(id, :claim) AND NOT begins_with(id, :key)",
                            ExpressionAttributeValues=to_item({":claim": CLAIM_PREFIX, ":key": IDEMPOTENCY_PREFIX}))
        return sorted((Department.from_dict(item) for item in items), key=lambda d: (d.name, d.id))

    async def list_departments(self) -> list[Department]:
        return await self._read(self._list_departments)

    async def get_department(self, department_id: str) -> Department:
        return await self._read(lambda: self._get_department(department_id))

    async def create_department(self, name: str, description: str = "",
                                idempotency: IdempotencyKey | None = None) -> Change:
        department = Department.new(name, description)

        def create() -> Change:
            self._claim_name(name, department.id)
            self.client.put_item(TableName=self.departments_table,
                                 Item=to_item({**department.to_dict(), "horizon": 0}),
                                 ConditionExpression="attribute_not_exists(id)")
            return Change(Kind.DEPARTMENT_CREATED, department)

        return await self._write(lambda: self._idempotent(idempotency, create))

    async def update_department(self, department_id: str, changes: Mapping[str, Any]) -> Change:
        def update() -> Change:
            current = self._get_department(department_id)
            department = current.updated(changes)
            if department.name != current.name:
                self._claim_name(department.name, department_id)
            try:
                self.client.update_item(
                    TableName=self.departments_table, Key=to_item({"id": department_id}),
                    UpdateExpression="SET #name = :name, description = :description, updated_at = :updated_at",
                    ConditionExpression="attribute_exists(id)", ExpressionAttributeNames={"#name": "name"},
                    ExpressionAttributeValues=to_item({":name": department.name, ":description": department.description,
                                                       ":updated_at": department.updated_at}))
            except botocore.exceptions.ClientError as exc:
                if department.name != current.name:
                    self._release_name(department.name, department_id)
                if error_code(exc) == "ConditionalCheckFailedException":
                    raise DepartmentNotFound() from None
                raise
            if department.name != current.name:
                self._release_name(current.name, department_id)
            return Change(Kind.DEPARTMENT_UPDATED, self._get_department(department_id))

        return await self._write(update)

    async def delete_department(self, department_id: str) -> Change:
        def delete() -> Change:
            department = self._get_department(department_id)
            # Events first: a delete cut short leaves a department that can be deleted again.
            self._delete_events_of(department_id)
            try:
                self.client.delete_item(TableName=self.departments_table, Key=to_item({"id": department_id}),
                                        ConditionExpression="attribute_exists(id)")
            except botocore.exceptions.ClientError as exc:
                if error_code(exc) == "ConditionalCheckFailedException":
                    raise DepartmentNotFound() from None
                raise
            self._release_name(department.name, department_id)
            self._delete_events_of(department_id)  # any created while the first sweep ran
            self._batch_write(self.changes_table, [{"DeleteRequest": {"Key": to_item(
                {"department_id": department_id, "seq": item["seq"]})}} for item in self._changes(department_id, -1)])
            return Change(Kind.DEPARTMENT_DELETED, department)

        return await self._write(delete)

    def _delete_events_of(self, department_id: str) -> None:
        keys = self._event_ids(department_id)
        self._batch_write(self.events_table, [{"DeleteRequest": {"Key": to_item(key)}} for key in keys])

    # -- events ---------------------------------------------------------------------------
    async def list_events(
        self, department_id: str, date_from: str | None = None, date_to: str | None = None
    ) -> list[Event]:
        def query() -> list[Event]:
            self._get_department(department_id)
            condition, values = "department_id = :d", {":d": department_id}
            if date_from and date_to:
                condition += " AND event_date BETWEEN :from AND :to"
                values.update({":from": date_from, ":to": date_to})
            elif date_from:
                condition += " AND event_date >= :from"
                values[":from"] = date_from
            elif date_to:
                condition += " AND event_date <= :to"
                values[":to"] = date_to
            items = self._pages("query", TableName=self.events_table, IndexName=DATE_INDEX,
                                KeyConditionExpression=condition, ExpressionAttributeValues=to_item(values))
            return sorted((Event.from_dict(item) for item in items), key=Event.sort_key)

        return await self._read(query)

    async def get_event(self, event_id: str) -> Event:
        return await self._read(lambda: self._get_event(event_id))

    async def create_event(self, department_id: str, fields: Mapping[str, Any],
                           idempotency: IdempotencyKey | None = None) -> Change:
        new = Event.new(department_id, fields)

        def create() -> Change:
            self._ensure_feed(department_id)
            seq = self._record_change(department_id, "put", new.id, lambda n: dataclasses.replace(new, seq=n))
            event = dataclasses.replace(new, seq=seq)
            self.client.put_item(TableName=self.events_table, Item=to_item(event.to_dict()),
                                 ConditionExpression="attribute_not_exists(id)")
            try:
                self._get_department(department_id)
            except DepartmentNotFound:  # deleted meanwhile: do not leave an orphan behind
                self.client.delete_item(TableName=self.events_table,
                                        Key=to_item({"id": event.id, "department_id": department_id}))
                raise
            return Change(Kind.EVENT_CREATED, event, seq)

        return await self._write(lambda: self._idempotent(idempotency, create))

    def _change_event(self, event_id: str, if_versions: Collection[int] | None,
                      change: Callable[[Event], Event | None]) -> tuple[Event, Event | None, int]:
        """Update (`change` returns the new event) or delete (it returns None) an event under
        `If-Match`: the change is recorded in the feed, then written on condition that the
        version is still the one read. When another server got there first, the recorded
        change becomes a noop and the whole step is tried again on what is there now.
        Returns the event as it was, as it became, and the seq."""
        current = self._get_event(event_id)
        self._ensure_feed(current.department_id)
        for _ in range(UPDATE_ATTEMPTS):
            check_versions(current, if_versions)
            new = change(current)
            seq = self._record_change(current.department_id, "delete" if new is None else "put", event_id,
                                      lambda n: new and dataclasses.replace(new, seq=n))
            condition = {"ConditionExpression": "version = :seen",
                         "ExpressionAttributeValues": to_item({":seen": current.version})}
            try:
                if new is None:
                    self.client.delete_item(TableName=self.events_table, **condition,
                                            Key=to_item({"id": event_id, "department_id": current.department_id}))
                    return current, None, seq
                new = dataclasses.replace(new, seq=seq)
                self.client.put_item(TableName=self.events_table, Item=to_item(new.to_dict()), **condition)
                return current, new, seq
            except botocore.exceptions.ClientError as exc:
                if error_code(exc) != "ConditionalCheckFailedException":
                    raise
            self._void_change(current.department_id, seq, event_id)
            current = self._get_event(event_id)
        raise StorageUnavailable()

    async def update_event(self, event_id: str, changes: Mapping[str, Any],
                           if_versions: Collection[int] | None = None) -> Change:
        _, event, seq = await self._write(lambda: self._change_event(event_id, if_versions,
                                                                     lambda current: current.updated(changes)))
        return Change(Kind.EVENT_UPDATED, event, seq)

    async def delete_event(self, event_id: str, if_versions: Collection[int] | None = None) -> Change:
        event, _, seq = await self._write(lambda: self._change_event(event_id, if_versions, lambda current: None))
        return Change(Kind.EVENT_DELETED, event, seq)

    # -- bulk import ----------------------------------------------------------------------
    async def import_departments(self, records: Sequence[Department]) -> list[str]:
        def upsert() -> list[str]:
            outcomes = []
            for record in records:
                try:
                    existing = self._get_department(record.id)
                except DepartmentNotFound:
                    existing = None
                outcome = import_outcome(existing, record)
                if outcome != "unchanged":
                    self._claim_name(record.name, record.id)
                    # Content as given; the feed's count and horizon stay; a new epoch.
                    self.client.update_item(
                        TableName=self.departments_table, Key=to_item({"id": record.id}),
                        UpdateExpression="SET #name = :name, description = :description, created_at = :created,"
                                         " updated_at = :updated, epoch = :epoch, seq = if_not_exists(seq, :zero),"
                                         " horizon = if_not_exists(horizon, :zero)",
                        ExpressionAttributeNames={"#name": "name"},
                        ExpressionAttributeValues=to_item({
                            ":name": record.name, ":description": record.description, ":created": record.created_at,
                            ":updated": record.updated_at, ":epoch": new_epoch(), ":zero": 0}))
                    if existing is not None and existing.name != record.name:
                        self._release_name(existing.name, record.id)
                outcomes.append(outcome)
            return outcomes

        return await self._write(upsert)

    async def import_events(self, records: Sequence[Event]) -> list[str]:
        def upsert() -> list[str]:
            for department_id in {record.department_id for record in records}:
                self._get_department(department_id)
            existing = self._existing_events(records)
            outcomes = []
            written: dict[str, list[Event]] = {}
            for record in records:
                outcome = import_outcome(existing.get(record.id), record)
                outcomes.append(outcome)
                if outcome != "unchanged":
                    written.setdefault(record.department_id, []).append(record)
            for department_id, events in written.items():
                self._ensure_feed(department_id)
                self._write_as_changes(department_id, events)
                self.client.update_item(TableName=self.departments_table, Key=to_item({"id": department_id}),
                                        UpdateExpression="SET epoch = :epoch",
                                        ExpressionAttributeValues=to_item({":epoch": new_epoch()}))
            return outcomes

        return await self._write(upsert)

    def _existing_events(self, records: Sequence[Event]) -> dict[str, Event]:
        """The stored versions of `records` under their own department, by id (BatchGetItem)."""
        found: dict[str, Event] = {}
        keys = [to_item({"id": r.id, "department_id": r.department_id}) for r in records]
        for start in range(0, len(keys), 100):  # BatchGetItem's limit
            requests = {self.events_table: {"Keys": keys[start:start + 100], "ConsistentRead": True}}
            for response in self._until_processed(self.client.batch_get_item, requests, "UnprocessedKeys"):
                for item in response.get("Responses", {}).get(self.events_table, []):
                    event = Event.from_dict(from_item(item))
                    found[event.id] = event
        return found
