"""Benchmark: what the DynamoDB backend asks of DynamoDB — requests and capacity units per
create, update, delete and feed read, and what a full answer costs as history grows.

Runs against moto in-process (requests are counted through botocore's event hooks, so the
counts are exact). Capacity units follow DynamoDB's pricing rules from the sizes of the
items written and read: a write costs ceil(item size / 1 KB) WCU (updates and deletes of
items under 1 KB: 1), a consistent read ceil(total size read / 4 KB) RCU per request.
moto's own ConsumedCapacity figures are not used: it does not follow those rules.

    .venv/bin/python tests/bench/bench_dynamo.py --events 5000 --history 50000

Runs on whatever `calsync` the Python path finds first, so the same script measures an
older checkout too (PYTHONPATH=<its package folders>).
"""
from __future__ import annotations

import argparse
import asyncio
import collections
import math
import os
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import moto

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
os.environ.update({"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench", "AWS_DEFAULT_REGION": "us-east-1"})

from calsync.storage.dynamodb import DynamoOptions, DynamoStorage  # noqa: E402
from calsync.storage.feed import Cursor  # noqa: E402
from calsync.storage.records import Event  # noqa: E402


def value_size(value: dict[str, Any]) -> int:
    (kind, inner), = value.items()
    if kind == "S":
        return len(inner.encode("utf-8"))
    if kind == "N":
        return math.ceil(len(inner.lstrip("-").replace(".", "")) / 2) + 1
    if kind == "BOOL" or kind == "NULL":
        return 1
    if kind == "M":
        return 3 + sum(len(k.encode()) + value_size(v) + 1 for k, v in inner.items())
    if kind == "L":
        return 3 + sum(value_size(v) + 1 for v in inner)
    return len(str(inner))


def item_size(item: dict[str, Any]) -> int:
    return sum(len(name.encode()) + value_size(value) for name, value in item.items())


class Meter:
    """Counts requests and capacity units by operation, from botocore's events."""

    def __init__(self, client: Any) -> None:
        self.requests: collections.Counter = collections.Counter()
        self.rcu = 0.0
        self.wcu = 0.0
        client.meta.events.register("before-parameter-build.dynamodb.*", self._before)
        client.meta.events.register("after-call.dynamodb.*", self._after)

    def reset(self) -> None:
        self.requests.clear()
        self.rcu = self.wcu = 0.0

    def _before(self, model: Any, params: dict, context: dict, **_: Any) -> None:
        context["bench_params"] = params
        self.requests[model.name] += 1
        if model.name == "PutItem":
            self.wcu += math.ceil(item_size(params["Item"]) / 1024)
        elif model.name in ("UpdateItem", "DeleteItem"):
            self.wcu += 1
        elif model.name == "BatchWriteItem":
            for requests in params["RequestItems"].values():
                for request in requests:
                    item = request.get("PutRequest", {}).get("Item")
                    self.wcu += math.ceil(item_size(item) / 1024) if item else 1

    def _after(self, model: Any, parsed: dict, context: dict, **_: Any) -> None:
        consistent = 1.0 if context.get("bench_params", {}).get("ConsistentRead") else 0.5
        if model.name == "GetItem":
            self.rcu += consistent * max(1, math.ceil(item_size(parsed.get("Item", {})) / 4096))
        elif model.name in ("Query", "Scan"):
            size = sum(item_size(item) for item in parsed.get("Items", []))
            self.rcu += consistent * max(1, math.ceil(size / 4096))
        elif model.name == "BatchGetItem":
            for items in parsed.get("Responses", {}).values():
                self.rcu += sum(max(1, math.ceil(item_size(item) / 4096)) for item in items)

    def line(self, label: str, times: int = 1) -> str:
        requests = ", ".join(f"{name} {count / times:g}" for name, count in sorted(self.requests.items()))
        total = sum(self.requests.values()) / times
        return f"{label:<34} {total:6.1f} requests ({requests}); {self.rcu / times:6.1f} RCU, {self.wcu / times:6.1f} WCU"


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=5000)
    parser.add_argument("--history", type=int, default=50000, help="changes kept: creates plus updates")
    parser.add_argument("--samples", type=int, default=20)
    args = parser.parse_args()
    with moto.mock_aws():
        suffix = uuid.uuid4().hex[:6]
        storage = DynamoStorage(DynamoOptions(region="us-east-1", departments_table=f"d-{suffix}",
                                              events_table=f"e-{suffix}", changes_table=f"c-{suffix}"))
        await storage.create_tables()
        await storage.open()
        meter = Meter(storage.client)
        department = (await storage.create_department("벤치")).record
        await storage.read_feed(department.id)
        fields = {"event_date": "2026-12-02", "title": "주간 회의", "description": "회의실 A, 안건 정리" * 5,
                  "time": "오후 2시 ~ 3시"}
        print(f"calsync from {Path(sys.modules['calsync.storage.dynamodb'].__file__).parent}")
        # per operation, in a small department
        for label, run in [
            ("create", lambda i: storage.create_event(department.id, fields)),
        ]:
            meter.reset()
            created = [await run(i) for i in range(args.samples)]
            print(meter.line(label, args.samples))
        meter.reset()
        for change in created:
            await storage.update_event(change.record.id, {"title": "고침"})
        print(meter.line("update", len(created)))
        state = await storage.feed_state(department.id)
        meter.reset()
        for change in created[: args.samples // 2]:
            await storage.delete_event(change.record.id)
        print(meter.line("delete", args.samples // 2))
        for k in (10, 100):
            state = await storage.feed_state(department.id)
            for change in created[args.samples // 2:]:
                for _ in range(max(1, k // (args.samples // 2))):
                    await storage.update_event(change.record.id, {"description": "다시"})
            meter.reset()
            page = await storage.read_feed(department.id, Cursor(state.seq, state.epoch))
            print(meter.line(f"feed read of {page.seq - state.seq} changes"))
            meter.reset()
            page = await storage.read_feed(department.id, Cursor(state.seq, state.epoch), 20)
            print(meter.line(f"  the same with limit 20 ({len(page.events) + len(page.deleted)} items)"))

        # full answers as history grows
        big = (await storage.create_department("큰 부서")).record
        events = [Event.new(big.id, {**fields, "title": f"일정 {i}"}) for i in range(args.events)]
        await storage.import_events(events)
        await storage.read_feed(big.id)
        kept = args.events
        checkpoints = sorted({args.events, args.history // 4, args.history // 2, args.history})
        for target in checkpoints:
            started = time.monotonic()
            i = 0
            while kept < target:
                await storage.update_event(events[i % len(events)].id, {"time": f"오후 {i % 12}시"})
                kept += 1
                i += 1
            fill = time.monotonic() - started
            await storage.read_feed(big.id)
            meter.reset()
            started = time.monotonic()
            page = await storage.read_feed(big.id)
            took = time.monotonic() - started
            print(meter.line(f"full answer, {len(page.events)} events, {kept} changes") + f"; {took * 1000:.0f} ms"
                  + (f" (history written in {fill:.0f} s)" if fill > 1 else ""))
        await storage.close()


if __name__ == "__main__":
    asyncio.run(main())
