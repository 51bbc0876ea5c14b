"""`dynamodb`: AWS DynamoDB (or any compatible endpoint) through boto3.

Layout, compatible with the tables the original server's README creates:

    departments  hash id                      index name-index (hash name)
    events       hash id, range department_id index department-date-index (hash department_id, range event_date)

A department name is held by a claim item in `departments` under the id `name#<name>`
(never a UUID, never listed), written with `attribute_not_exists(id)`, so two servers
creating one name at once cannot both win. No TransactWriteItems: several
DynamoDB-compatible servers lack it.

boto3 blocks, so every call runs on threads: writes on one thread, in call order (pushes
follow the order changes were stored), reads on a small pool. Throttling, timeouts and
connection errors that outlast botocore's `standard` retries become `StorageUnavailable`.
"""
from __future__ import annotations

import asyncio
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Mapping, Sequence, TypeVar

import boto3
import botocore.config
import botocore.exceptions
from boto3.dynamodb.types import TypeDeserializer, TypeSerializer

from storage.base import BackendOptions
from storage.errors import (
    DepartmentNotFound,
    DuplicateDepartmentName,
    EventNotFound,
    StorageSetupError,
    StorageUnavailable,
)
from storage.records import Department, Event, import_outcome
from storage.threaded import ThreadedStorage

log = logging.getLogger("calsync.dynamodb")
T = TypeVar("T")

NAME_INDEX = "name-index"
DATE_INDEX = "department-date-index"
CLAIM_PREFIX = "name#"
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


def to_item(record: Mapping[str, Any]) -> dict[str, Any]:
    return {k: _serializer.serialize(v) for k, v in record.items()}


def from_item(item: Mapping[str, Any]) -> dict[str, Any]:
    """A DynamoDB item as plain Python; numbers come back as `int` (never `Decimal`)."""
    values = {k: _deserializer.deserialize(v) for k, v in item.items()}
    return {k: int(v) if k == "version" else v for k, v in values.items()}


def _possible_key(value: str) -> bool:
    """Ids are UUIDs; anything DynamoDB would refuse as a key (over 2 KB) cannot be stored."""
    return 0 < len(value.encode("utf-8")) <= MAX_KEY_BYTES


def error_code(exc: BaseException) -> str:
    return exc.response.get("Error", {}).get("Code", "") if isinstance(exc, botocore.exceptions.ClientError) else ""


@dataclass(frozen=True)
class DynamoOptions(BackendOptions):
    region: str = "${AWS_REGION:-ap-northeast-2}"
    endpoint_url: str = "${DYNAMODB_ENDPOINT_URL:-}"
    departments_table: str = "${DEPARTMENTS_TABLE:-departments}"
    events_table: str = "${EVENTS_TABLE:-events}"
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

    def describe(self) -> str:
        where = self.options.endpoint_url or f"AWS {self.options.region}"
        return f"dynamodb ({where}: {self.departments_table}, {self.events_table})"

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
        await asyncio.get_running_loop().run_in_executor(self._readers, self._check_tables)

    def _check_tables(self) -> None:
        for table, index in ((self.departments_table, NAME_INDEX), (self.events_table, DATE_INDEX)):
            description = self._describe(table)
            if description is None:
                raise StorageSetupError(
                    f"DynamoDB table '{table}' does not exist (테이블 '{table}'가 없습니다);"
                    " create the tables with: calsync create-tables"
                )
            indexes = {i["IndexName"] for i in description.get("GlobalSecondaryIndexes", [])}
            if index not in indexes:
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
        said = []
        specs = [
            (self.departments_table, [("id", "HASH")], NAME_INDEX, [("name", "HASH")]),
            (self.events_table, [("id", "HASH"), ("department_id", "RANGE")], DATE_INDEX,
             [("department_id", "HASH"), ("event_date", "RANGE")]),
        ]
        for table, key, index, index_key in specs:
            description = self._describe(table)
            attributes = [{"AttributeName": name, "AttributeType": "S"} for name in dict(key + index_key)]
            index_spec = {
                "IndexName": index,
                "KeySchema": [{"AttributeName": n, "KeyType": t} for n, t in index_key],
                "Projection": {"ProjectionType": "ALL"},
                **self._throughput(),
            }
            try:
                if description is None:
                    self.probe_client.create_table(
                        TableName=table, AttributeDefinitions=attributes,
                        KeySchema=[{"AttributeName": n, "KeyType": t} for n, t in key],
                        GlobalSecondaryIndexes=[index_spec], **self._billing(),
                    )
                    said.append(f"created table '{table}' with index '{index}' ({self.options.billing_mode})")
                elif index not in {i["IndexName"] for i in description.get("GlobalSecondaryIndexes", [])}:
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
                    said.append(f"table '{table}' and index '{index}' already exist")
            except botocore.exceptions.ClientError as exc:
                raise StorageSetupError(f"cannot create DynamoDB table '{table}': {exc}") from None
            self._wait_active(table)
        said.append("all tables and indexes are ACTIVE")
        return said

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
        self.shutdown_threads()
        self._readers.shutdown(wait=True)

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

    def _get_department(self, department_id: str) -> Department:
        if department_id.startswith(CLAIM_PREFIX) or not _possible_key(department_id):
            raise DepartmentNotFound()
        item = self.client.get_item(TableName=self.departments_table, Key=to_item({"id": department_id}),
                                    ConsistentRead=True).get("Item")
        if item is None:
            raise DepartmentNotFound()
        return Department.from_dict(from_item(item))

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

        A claim whose department does not exist (a create cut short by a crash) is stale:
        it is removed and the claim tried again.
        """
        claim = to_item({"id": CLAIM_PREFIX + name, "department_id": department_id})
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
            holder_id = from_item(holder)["department_id"]
            try:
                if self._get_department(holder_id).name == name:
                    raise DuplicateDepartmentName()
            except DepartmentNotFound:
                pass
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

    # -- departments ----------------------------------------------------------------------
    async def list_departments(self) -> list[Department]:
        def scan() -> list[Department]:
            items = self._pages("scan", TableName=self.departments_table, FilterExpression="NOT begins_with(id, :claim)",
                                ExpressionAttributeValues=to_item({":claim": CLAIM_PREFIX}))
            return sorted((Department.from_dict(item) for item in items), key=lambda d: (d.name, d.id))

        return await self._read(scan)

    async def get_department(self, department_id: str) -> Department:
        return await self._read(lambda: self._get_department(department_id))

    async def create_department(self, name: str, description: str = "") -> Department:
        department = Department.new(name, description)

        def create() -> Department:
            self._claim_name(name, department.id)
            self.client.put_item(TableName=self.departments_table, Item=to_item(department.to_dict()),
                                 ConditionExpression="attribute_not_exists(id)")
            return department

        return await self._write(create)

    async def delete_department(self, department_id: str) -> Department:
        def delete() -> Department:
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
            return department

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

    async def create_event(self, department_id: str, fields: Mapping[str, Any]) -> Event:
        event = Event.new(department_id, fields)

        def create() -> Event:
            self._get_department(department_id)
            self.client.put_item(TableName=self.events_table, Item=to_item(event.to_dict()),
                                 ConditionExpression="attribute_not_exists(id)")
            try:
                self._get_department(department_id)
            except DepartmentNotFound:  # deleted meanwhile: do not leave an orphan behind
                self.client.delete_item(TableName=self.events_table,
                                        Key=to_item({"id": event.id, "department_id": department_id}))
                raise
            return event

        return await self._write(create)

    async def update_event(self, event_id: str, changes: Mapping[str, Any]) -> Event:
        def update() -> Event:
            for _ in range(UPDATE_ATTEMPTS):
                current = self._get_event(event_id)
                event = current.updated(changes)
                try:
                    self.client.put_item(TableName=self.events_table, Item=to_item(event.to_dict()),
                                         ConditionExpression="version = :seen",
                                         ExpressionAttributeValues=to_item({":seen": current.version}))
                    return event
                except botocore.exceptions.ClientError as exc:
                    if error_code(exc) != "ConditionalCheckFailedException":
                        raise
                    # Another server changed (or deleted) it between our read and write: again.
            raise StorageUnavailable()

        return await self._write(update)

    async def delete_event(self, event_id: str) -> Event:
        def delete() -> Event:
            event = self._get_event(event_id)
            try:
                self.client.delete_item(TableName=self.events_table,
                                        Key=to_item({"id": event.id, "department_id": event.department_id}),
                                        ConditionExpression="attribute_exists(id)")
            except botocore.exceptions.ClientError as exc:
                if error_code(exc) == "ConditionalCheckFailedException":
                    raise EventNotFound() from None
                raise
            return event

        return await self._write(delete)

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
                    self.client.put_item(TableName=self.departments_table, Item=to_item(record.to_dict()))
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
            outcomes, requests = [], []
            for record in records:
                found = existing.get(record.id)
                outcome = import_outcome(found, record)
                outcomes.append(outcome)
                if outcome == "unchanged":
                    continue
                requests.append({"PutRequest": {"Item": to_item(record.to_dict())}})
            self._batch_write(self.events_table, requests)
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
