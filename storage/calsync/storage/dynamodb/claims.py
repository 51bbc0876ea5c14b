"""Claims in the departments table: department names, and idempotency keys.

A name is held by an item `name#<name>` (never a UUID, never listed), written with a
conditional put, so two servers creating one name at once cannot both win (contract 7).
An idempotency key is an item `idem#<hash>`, held pending while its create runs and then
keeping the create's answer; DynamoDB's TTL on `ttl` removes it later (reads check too).
"""
from __future__ import annotations

import hashlib
import json
import math
from typing import Any, Callable

from calsync.storage.dynamodb.base import CLAIM_PREFIX, IDEMPOTENCY_PREFIX, DynamoParts
from calsync.storage.dynamodb.items import applied, from_item, to_item
from calsync.storage.errors import DepartmentNotFound, DuplicateDepartmentName, IdempotencyInProgress
from calsync.storage.feed import Change, IdempotencyKey, StoredCreate

#: A name claim this young whose department is not there yet belongs to a create in progress.
CLAIM_GRACE_SECONDS = 30.0
PENDING_SECONDS = 60  # a create that held its idempotency key this long without finishing has died


class ClaimsPart(DynamoParts):
    def _claim_name(self, name: str, department_id: str) -> None:
        """Take the name for `department_id`, or raise `DuplicateDepartmentName`.

        A claim whose department does not exist is either a create still on its way (the
        claim is written first) or one cut short by a crash. Younger than
        `CLAIM_GRACE_SECONDS` it is taken to be on its way and the name is taken; older, it
        is stale: it is removed and the claim tried again.
        """
        claim = to_item({"id": CLAIM_PREFIX + name, "department_id": department_id, "claimed_at": self.clock()})
        for _ in range(3):
            if applied(lambda: self.client.put_item(
                    TableName=self.departments_table, Item=claim,
                    ConditionExpression="attribute_not_exists(id) OR department_id = :mine",
                    ExpressionAttributeValues=to_item({":mine": department_id}))):
                return
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
        applied(lambda: self.client.delete_item(
            TableName=self.departments_table, Key=to_item({"id": CLAIM_PREFIX + name}),
            ConditionExpression="department_id = :mine", ExpressionAttributeValues=to_item({":mine": department_id})))

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
            if applied(lambda: self.client.put_item(
                    TableName=self.departments_table,
                    Item={**item_key, **to_item({"state": "pending", "fingerprint": key.fingerprint,
                                                 "started_at": now, "expires_at": key.expires_at(now),
                                                 "ttl": math.ceil(key.expires_at(now))})},
                    ConditionExpression="attribute_not_exists(id) OR expires_at < :now"
                                        " OR (#state = :pending AND started_at < :stale)",
                    ExpressionAttributeNames={"#state": "state"},
                    ExpressionAttributeValues=to_item({":now": now, ":pending": "pending",
                                                       ":stale": now - PENDING_SECONDS}))):
                return None
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
        applied(lambda: self.client.delete_item(
            TableName=self.departments_table, Key=self._idempotency_id(key), ConditionExpression="#state = :pending",
            ExpressionAttributeNames={"#state": "state"}, ExpressionAttributeValues=to_item({":pending": "pending"})))

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
