"""`dynamodb`: the backend for many processes on many hosts (see `storage.py`)."""
from calsync.storage.dynamodb.items import from_item, to_item
from calsync.storage.dynamodb.storage import DynamoStorage
from calsync.storage.dynamodb.tables import DynamoOptions

__all__ = ["DynamoOptions", "DynamoStorage", "from_item", "to_item"]
