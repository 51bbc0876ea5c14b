"""What every part of the DynamoDB backend shares: its client and tables, and record reads."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable

from calsync.storage.dynamodb.items import from_item, pages, possible_key, to_item
from calsync.storage.errors import DepartmentNotFound, EventNotFound
from calsync.storage.records import Department, Event

if TYPE_CHECKING:
    from calsync.storage.dynamodb.tables import DynamoOptions

NAME_INDEX = "name-index"
DATE_INDEX = "department-date-index"
CLAIM_PREFIX = "name#"
IDEMPOTENCY_PREFIX = "idem#"


class DynamoParts:
    """Set up by `DynamoStorage.__init__`; every method runs on a worker thread."""

    options: DynamoOptions
    client: Any
    probe_client: Any
    departments_table: str
    events_table: str
    changes_table: str
    clock: Callable[[], float]
    poll_seconds = 2.0  # between DescribeTable calls while create-tables waits

    def _department_item(self, department_id: str) -> dict[str, Any]:
        if department_id.startswith((CLAIM_PREFIX, IDEMPOTENCY_PREFIX)) or not possible_key(department_id):
            raise DepartmentNotFound()
        item = self.client.get_item(TableName=self.departments_table, Key=to_item({"id": department_id}),
                                    ConsistentRead=True).get("Item")
        if item is None:
            raise DepartmentNotFound()
        return from_item(item)

    def _get_department(self, department_id: str) -> Department:
        return Department.from_dict(self._department_item(department_id))

    def _get_event(self, event_id: str) -> Event:
        if not possible_key(event_id):
            raise EventNotFound()
        items = list(pages(self.client, "query", TableName=self.events_table, ConsistentRead=True,
                                 KeyConditionExpression="id = :id", ExpressionAttributeValues=to_item({":id": event_id})))
        items = [item for item in items if "event_date" in item]  # not a fence left where none was
        if not items:
            raise EventNotFound()
        return Event.from_dict(items[0])

    def _event_ids(self, department_id: str) -> list[dict[str, Any]]:
        return [{"id": item["id"], "department_id": department_id} for item in pages(self.client,
            "query", TableName=self.events_table, IndexName=DATE_INDEX, ProjectionExpression="id",
            KeyConditionExpression="department_id = :d", ExpressionAttributeValues=to_item({":d": department_id}))]

