"""`dynamodb`: AWS DynamoDB (or any compatible endpoint) through boto3.

The backend is composed of parts, one module each (as Radicale composes its storage):
`tables` (options, checking and creating the tables), `claims` (department names and
idempotency keys), `feed` (the change protocol: how a write becomes a change that is exact
across processes and through faults) and this module (departments, events, imports).
`items` holds what they share: encoding, paging, batches and conditional writes.

boto3 blocks, so every call runs on threads: writes on one thread, in call order (pushes
follow the order changes were stored), reads on a small pool. Throttling, timeouts and
connection errors that outlast botocore's `standard` retries become `StorageUnavailable`.
No TransactWriteItems: several DynamoDB-compatible servers lack it, and the feed needs none.
"""
from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Collection, Mapping, Sequence, TypeVar

import boto3
import botocore.config
import botocore.exceptions

from calsync.storage.book import check_versions
from calsync.storage.dynamodb.base import CLAIM_PREFIX, DATE_INDEX, IDEMPOTENCY_PREFIX
from calsync.storage.dynamodb.claims import ClaimsPart
from calsync.storage.dynamodb.feed import FeedPart
from calsync.storage.dynamodb.items import applied, batch_write, error_code, from_item, pages, to_item, until_processed
from calsync.storage.dynamodb.tables import CHANGES_SUFFIX, DynamoOptions, TablesPart
from calsync.storage.errors import DepartmentNotFound
from calsync.storage.feed import Change, Cursor, FeedPage, FeedState, IdempotencyKey, Kind
from calsync.storage.records import Department, Event, import_outcome, new_epoch
from calsync.storage.threaded import ThreadedStorage

log = logging.getLogger("calsync.dynamodb")
T = TypeVar("T")

# Errors that mean "DynamoDB cannot answer now", after botocore's own retries.
UNAVAILABLE_CODES = {
    "ProvisionedThroughputExceededException", "ThrottlingException", "RequestLimitExceeded",
    "InternalServerError", "ServiceUnavailable", "ResourceNotFoundException", "LimitExceededException",
    "UnrecognizedClientException", "InvalidSignatureException", "AccessDeniedException",
    "ExpiredTokenException", "TransactionInProgressException",
}


class DynamoStorage(TablesPart, ClaimsPart, FeedPart, ThreadedStorage):
    options_class = DynamoOptions
    options: DynamoOptions

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
        self._first_seen = {}

    def describe(self) -> str:
        where = self.options.endpoint_url or f"AWS {self.options.region}"
        return f"dynamodb ({where}: {self.departments_table}, {self.events_table}, {self.changes_table})"

    # -- running boto3 off the IOLoop -------------------------------------------------------
    async def _write(self, fn: Callable[[], T]) -> T:
        return await self.run(fn)

    async def _read(self, fn: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._readers, self.guarded, fn)

    def unavailable(self, error: BaseException) -> bool:
        # Throttling, outages, rejected credentials; connection refused or reset, timeouts:
        # nothing was changed that the caller will be told about, and it may retry.
        if isinstance(error, botocore.exceptions.ClientError):
            return error_code(error) in UNAVAILABLE_CODES
        return isinstance(error, (botocore.exceptions.BotoCoreError, OSError))

    # -- life cycle -----------------------------------------------------------------------
    async def open(self) -> None:
        await asyncio.get_running_loop().run_in_executor(self._readers, self._open)

    async def create_tables(self) -> list[str]:
        return await asyncio.get_running_loop().run_in_executor(self._readers, self._create_tables)

    async def ping(self) -> None:
        def probe() -> None:
            self.probe_client.describe_table(TableName=self.departments_table)

        await self._read(probe)

    async def close(self) -> None:
        await self.shutdown_threads(self._readers)

    # -- the feed -------------------------------------------------------------------------
    def _ensure_feed(self, department_id: str) -> None:
        """A department stored before the feed existed: its events become the feed's first
        changes (on the writer thread: it writes). A feed once started stays, so each
        department is looked at once per process."""
        if department_id in self._fed:
            return
        department = self._get_department(department_id)
        if not department.epoch:
            events = [Event.from_dict(item) for item in pages(
                self.client, "query", TableName=self.events_table, IndexName=DATE_INDEX,
                KeyConditionExpression="department_id = :d", ExpressionAttributeValues=to_item({":d": department_id}))]
            self._write_as_changes(department_id, sorted(events, key=lambda e: (e.created_at, e.id)), {})
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
            frontier = self._settle(department_id)
            return FeedState(frontier.department.epoch, frontier.top, frontier.horizon)

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

    # -- departments ----------------------------------------------------------------------
    def _list_departments(self) -> list[Department]:
        items = pages(self.client, "scan", TableName=self.departments_table,
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
                updated = applied(lambda: self.client.update_item(
                    TableName=self.departments_table, Key=to_item({"id": department_id}),
                    UpdateExpression="SET #name = :name, description = :description, updated_at = :updated_at",
                    ConditionExpression="attribute_exists(id)", ExpressionAttributeNames={"#name": "name"},
                    ExpressionAttributeValues=to_item({":name": department.name, ":description": department.description,
                                                       ":updated_at": department.updated_at})))
            except BaseException:
                updated = False
                raise
            finally:
                if not updated and department.name != current.name:
                    self._release_name(department.name, department_id)
            if not updated:
                raise DepartmentNotFound()
            if department.name != current.name:
                self._release_name(current.name, department_id)
            return Change(Kind.DEPARTMENT_UPDATED, self._get_department(department_id))

        return await self._write(update)

    async def delete_department(self, department_id: str) -> Change:
        def delete() -> Change:
            department = self._get_department(department_id)
            # Events first: a delete cut short leaves a department that can be deleted again.
            self._delete_events_of(department_id)
            if not applied(lambda: self.client.delete_item(
                    TableName=self.departments_table, Key=to_item({"id": department_id}),
                    ConditionExpression="attribute_exists(id)")):
                raise DepartmentNotFound()
            self._release_name(department.name, department_id)
            self._delete_events_of(department_id)  # any created while the first sweep ran
            self._drop_feed(department_id)
            return Change(Kind.DEPARTMENT_DELETED, department)

        return await self._write(delete)

    def _delete_events_of(self, department_id: str) -> None:
        keys = self._event_ids(department_id)
        batch_write(self.client, self.events_table, [{"DeleteRequest": {"Key": to_item(key)}} for key in keys])

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
            items = pages(self.client, "query", TableName=self.events_table, IndexName=DATE_INDEX,
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
            _, event, seq = self._apply(department_id, new.id, None, lambda current: new)
            assert event is not None
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
        `If-Match`, through the feed's protocol; the event as it was, as it became, the seq."""
        current = self._get_event(event_id)
        self._ensure_feed(current.department_id)

        def checked(event: Event | None) -> Event | None:
            assert event is not None
            check_versions(event, if_versions)
            return change(event)

        before, after, seq = self._apply(current.department_id, event_id, current, checked)
        assert before is not None
        return before, after, seq

    async def update_event(self, event_id: str, changes: Mapping[str, Any],
                           if_versions: Collection[int] | None = None) -> Change:
        _, event, seq = await self._write(lambda: self._change_event(event_id, if_versions,
                                                                     lambda current: current.updated(changes)))
        assert event is not None
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
                replaced = {e.id: existing[e.id].seq for e in events if e.id in existing}
                self._write_as_changes(department_id, events, replaced)
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
            for response in until_processed(self.client.batch_get_item, requests, "UnprocessedKeys"):
                for item in response.get("Responses", {}).get(self.events_table, []):
                    if "event_date" in item:  # not a fence left where no event was
                        event = Event.from_dict(from_item(item))
                        found[event.id] = event
        return found
