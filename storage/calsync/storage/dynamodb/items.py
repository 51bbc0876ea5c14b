"""Items and requests: encoding records as DynamoDB items, paging, batches, conditional writes.

Everything here runs on worker threads and knows nothing of the feed or of departments.
"""
from __future__ import annotations

import decimal
import time
from typing import Any, Callable, Iterator, Mapping

import botocore.exceptions
from boto3.dynamodb.types import TypeDeserializer, TypeSerializer

from calsync.storage.errors import StorageUnavailable

BATCH_SIZE = 25  # BatchWriteItem's limit
MAX_KEY_BYTES = 1024  # DynamoDB refuses partition keys over 2,048 bytes (ValidationException)

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


def possible_key(value: str) -> bool:
    """Ids are UUIDs; anything DynamoDB would refuse as a key (over 2 KB) cannot be stored."""
    return 0 < len(value.encode("utf-8")) <= MAX_KEY_BYTES


def error_code(exc: BaseException) -> str:
    return exc.response.get("Error", {}).get("Code", "") if isinstance(exc, botocore.exceptions.ClientError) else ""


def applied(write: Callable[[], Any]) -> bool:
    """Run a conditional write: True when it was applied, False when its condition failed.

    False does not always mean "not written": botocore retries a call whose answer was lost,
    and the retry's condition then fails on the first attempt's own write. Callers that care
    read the item back to tell which.
    """
    try:
        write()
        return True
    except botocore.exceptions.ClientError as exc:
        if error_code(exc) == "ConditionalCheckFailedException":
            return False
        raise


def pages(client: Any, operation: str, **kwargs: Any) -> Iterator[dict[str, Any]]:
    """Every item of a Query or Scan, following LastEvaluatedKey to the end."""
    call = getattr(client, operation)
    while True:
        page = call(**kwargs)
        for item in page.get("Items", []):
            yield from_item(item)
        if "LastEvaluatedKey" not in page:
            return
        kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]


def first_items(client: Any, limit: int, **kwargs: Any) -> tuple[list[dict[str, Any]], bool]:
    """At most `limit` items of a Query, reading no more than that; and whether more follow."""
    found: list[dict[str, Any]] = []
    while len(found) < limit:
        page = client.query(Limit=limit - len(found), **kwargs)
        found += [from_item(item) for item in page.get("Items", [])]
        if "LastEvaluatedKey" not in page:
            return found, False
        kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]
    return found, True


def until_processed(call: Callable[..., dict], requests: dict[str, Any], leftover: str) -> Iterator[dict]:
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


def batch_write(client: Any, table: str, requests: list[dict[str, Any]]) -> None:
    """BatchWriteItem in chunks of 25, retrying UnprocessedItems."""
    for start in range(0, len(requests), BATCH_SIZE):
        for _ in until_processed(client.batch_write_item, {table: requests[start:start + BATCH_SIZE]},
                                 "UnprocessedItems"):
            pass
