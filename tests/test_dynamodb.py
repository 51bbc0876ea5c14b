"""What only the DynamoDB backend has: its tables, its paging, its concurrency, its outages."""
from __future__ import annotations

import asyncio
import collections
import dataclasses
import os
import shutil
import uuid
from pathlib import Path

import boto3
import botocore.exceptions
import pytest
from moto.server import ThreadedMotoServer
from tornado.testing import bind_unused_port

from calsync.app import make_app
from calsync.handlers.connections import HttpServer
from calsync.server.hub import Hub
from calsync.storage.errors import DuplicateDepartmentName, EventNotFound
from calsync.storage.feed import Cursor
from calsync.storage.records import Event
from tests.backends import dynamo_options, make_dynamo
from tests.client import SyncClient, api
from tests.process import ServerProcess, assert_one_line_exit_2, http_json, run_cli, write_config

REPO = Path(__file__).resolve().parent.parent


def count_calls(storage) -> collections.Counter:
    """Count the DynamoDB operations the storage's client makes (botocore's event hooks)."""
    calls: collections.Counter = collections.Counter()
    storage.client.meta.events.register("before-call.dynamodb.*",
                                        lambda model, **_: calls.update([model.name]))
    return calls


@pytest.fixture(params=["dynamodb", "dynamodb-http"])
def backend(request) -> str:
    """This module runs on DynamoDB only: moto in-process and moto over HTTP."""
    return request.param


@pytest.fixture
def dynamo(storage):
    return storage


async def test_more_than_a_megabyte_of_events_lists_completely_with_query_only(dynamo):
    department = (await dynamo.create_department("개발팀")).record
    padding = "가" * 4000  # 12 kB of UTF-8 per event
    created = [(await dynamo.create_event(department.id, {"event_date": f"2024-{1 + i % 12:02d}-{1 + i % 28:02d}",
                                                         "title": f"회의 {i}", "description": padding})).record
               for i in range(100)]
    calls = count_calls(dynamo)
    events = await dynamo.list_events(department.id)
    assert sorted(e.id for e in events) == sorted(e.id for e in created)
    assert calls["Query"] >= 2 and calls["Scan"] == 0  # more than one 1 MB page, and no Scan
    assert all(isinstance(e.version, int) for e in events)  # no Decimal leaks


async def test_event_by_id_never_scans(dynamo):
    department = (await dynamo.create_department("개발팀")).record
    event = (await dynamo.create_event(department.id, {"event_date": "2024-01-20", "title": "회의"})).record
    calls = count_calls(dynamo)
    await dynamo.get_event(event.id)
    (await dynamo.update_event(event.id, {"title": "수정"})).record
    await dynamo.list_events(department.id, "2024-01-01", "2024-01-31")
    (await dynamo.delete_event(event.id)).record
    (await dynamo.delete_department(department.id)).record
    assert calls["Scan"] == 0 and calls["Query"] >= 4


async def test_name_claims_never_show(dynamo):
    names = ["개발팀", "마케팅팀"]
    for name in names:
        (await dynamo.create_department(name)).record
    assert [d.name for d in await dynamo.list_departments()] == names
    assert dynamo.client.scan(TableName=dynamo.departments_table)["Count"] == 4  # two records, two claims


async def test_two_servers_creating_one_name(moto_server, io_loop):
    options = dynamo_options(moto_server)
    first, second = make_dynamo(options), make_dynamo(options)
    await first.create_tables()
    try:
        for round_ in range(5):
            results = await asyncio.gather(first.create_department(f"팀 {round_}"),
                                           second.create_department(f"팀 {round_}"), return_exceptions=True)
            assert sorted(type(r).__name__ for r in results) == ["Change", "DuplicateDepartmentName"]
        assert len(await first.list_departments()) == 5
    finally:
        await first.close()
        await second.close()


async def test_stale_name_claim_is_reclaimed(dynamo):
    """A create cut short between the claim and the record must not block the name forever."""
    dynamo.client.put_item(TableName=dynamo.departments_table,
                           Item={"id": {"S": "name#개발팀"}, "department_id": {"S": "gone"}})
    department = (await dynamo.create_department("개발팀")).record
    assert [d.id for d in await dynamo.list_departments()] == [department.id]
    with pytest.raises(DuplicateDepartmentName):
        (await dynamo.create_department("개발팀")).record


async def test_deleting_a_department_frees_its_name_and_batch_deletes_events(dynamo):
    department = (await dynamo.create_department("개발팀")).record
    for i in range(60):  # more than two BatchWriteItem batches
        (await dynamo.create_event(department.id, {"event_date": "2024-01-20", "title": f"회의 {i}"})).record
    calls = count_calls(dynamo)
    (await dynamo.delete_department(department.id)).record
    assert calls["BatchWriteItem"] >= 3
    assert dynamo.client.scan(TableName=dynamo.events_table)["Count"] == 0
    (await dynamo.create_department("개발팀")).record


def throttle(storage, operation: str) -> None:
    """Make every `operation` fail as DynamoDB does when throttled, after botocore's retries."""
    def refuse(**_):
        raise botocore.exceptions.ClientError(
            {"Error": {"Code": "ProvisionedThroughputExceededException", "Message": "slow down"}}, operation)

    storage.client.meta.events.register(f"before-call.dynamodb.{operation}", refuse)


async def test_throttling_answers_503_and_the_websocket_stays_open(dynamo, http_server_client, ws_url):
    department = (await dynamo.create_department("개발팀")).record
    throttle(dynamo, "PutItem")
    throttle(dynamo, "Query")
    status, body = await api(http_server_client, "POST", f"/api/events/{department.id}",
                             {"event_date": "2024-01-20", "title": "회의"})
    assert (status, body["code"], body["success"]) == (503, "storage_unavailable", False)
    client = await SyncClient.connect(ws_url)
    try:
        reply = await client.request("sync_request", {"department_id": department.id}, 1)
        assert (reply["event"], reply["data"]["code"], reply["id"]) == ("error", "storage_unavailable", 1)
        assert (await client.request("ping"))["event"] == "pong"
    finally:
        client.close()


async def test_a_slow_dynamodb_call_does_not_hold_up_the_websocket(dynamo, http_server_client, ws_url):
    department = (await dynamo.create_department("개발팀")).record
    release = asyncio.Event()
    loop = asyncio.get_running_loop()

    def slow(**_):
        asyncio.run_coroutine_threadsafe(release.wait(), loop).result(30)

    dynamo.client.meta.events.register("before-call.dynamodb.Query", slow)
    client = await SyncClient.connect(ws_url)
    try:
        listing = asyncio.ensure_future(api(http_server_client, "GET", f"/api/events/{department.id}"))
        await asyncio.sleep(0.05)
        assert (await client.request("ping", {}, "p"))["event"] == "pong"
        assert not listing.done()  # the Query is still waiting, the IOLoop is not
        release.set()
        assert (await listing)[0] == 200
    finally:
        release.set()
        client.close()


class ControllableMoto:
    """A moto server of our own that can go away and come back on the same port."""

    def __init__(self) -> None:
        sock, self.port = bind_unused_port()
        sock.close()
        self.url = f"http://127.0.0.1:{self.port}"
        self.server: ThreadedMotoServer | None = None

    def start(self) -> None:
        self.server = ThreadedMotoServer(ip_address="127.0.0.1", port=self.port, verbose=False)
        self.server.start()

    def stop(self) -> None:
        self.server.stop()
        self.server._server.server_close()  # refuse connections, as a dead endpoint does


@pytest.fixture
def outage_moto():
    moto = ControllableMoto()
    moto.start()
    yield moto
    if moto.server._server_ready_event.is_set():
        moto.stop()


async def test_unreachable_endpoint_answers_503_then_recovers(outage_moto, http_server_client):
    storage = make_dynamo(dynamo_options(outage_moto.url))
    await storage.create_tables()
    app = make_app(storage, Hub(), backend_name="dynamodb")
    server, client = await serve_app(app)
    try:
        assert (await api(client, "POST", "/api/departments", {"name": "개발팀"}))[0] == 201
        outage_moto.stop()
        status, body = await api(client, "GET", "/api/departments")
        assert (status, body["code"]) == (503, "storage_unavailable")
        status, body = await api(client, "GET", "/ready")
        assert (status, body["code"]) == (503, "storage_unavailable")
        assert (await api(client, "GET", "/health"))[0] == 200
        outage_moto.start()
        status, body = await api(client, "GET", "/api/departments")
        assert status == 200 and [d["name"] for d in body["departments"]] == ["개발팀"]
        assert (await api(client, "GET", "/ready"))[0] == 200
    finally:
        server.stop()
        client.close()
        await storage.close()


async def serve_app(app):
    """A real HTTP server for `app` on a free port, and a client that speaks to it."""
    from pytest_tornasync.plugin import AsyncHTTPServerClient

    sock, _ = bind_unused_port()
    server = HttpServer(app)
    server.add_socket(sock)
    return server, AsyncHTTPServerClient(http_server=server, force_instance=True)


def dynamo_config(tmp_path, endpoint: str, suffix: str):
    return write_config(tmp_path, (
        "storage:\n  backend: dynamodb\n  dynamodb:\n"
        f"    endpoint_url: {endpoint}\n    departments_table: departments-{suffix}\n"
        f"    events_table: events-{suffix}\n    changes_table: changes-{suffix}\n"
    ))


def test_serve_without_tables_says_what_to_run_then_create_tables_works(tmp_path, moto_server):
    config = dynamo_config(tmp_path, moto_server, "cli")
    assert_one_line_exit_2(run_cli("serve", "--config", str(config)),
                           "DynamoDB table 'departments-cli' does not exist", "calsync create-tables")
    created = run_cli("create-tables", "--config", str(config))
    assert created.returncode == 0, created.stderr
    assert "created table 'departments-cli' with index 'name-index'" in created.stdout
    assert "created table 'events-cli' with index 'department-date-index'" in created.stdout
    again = run_cli("create-tables", "--config", str(config))
    assert again.returncode == 0 and "already exist" in again.stdout

    server = ServerProcess(config)
    try:
        status, body = http_json(server.url + "/")
        assert (status, body["storage"]) == (200, "dynamodb")
        assert http_json(server.url + "/api/departments", "POST", {"name": "개발팀"})[0] == 201
    finally:
        assert server.stop() == 0


def test_create_tables_adds_missing_indexes_to_existing_tables(tmp_path, moto_server):
    """Tables made by hand (as the original README's `aws dynamodb create-table` does) may lack the indexes."""
    client = boto3.client("dynamodb", endpoint_url=moto_server, region_name="ap-northeast-2")
    client.create_table(TableName="departments-old", KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
                        AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}],
                        ProvisionedThroughput={"ReadCapacityUnits": 10, "WriteCapacityUnits": 10})
    client.create_table(TableName="events-old", KeySchema=[{"AttributeName": "id", "KeyType": "HASH"},
                                                           {"AttributeName": "department_id", "KeyType": "RANGE"}],
                        AttributeDefinitions=[{"AttributeName": n, "AttributeType": "S"}
                                              for n in ("id", "department_id")],
                        ProvisionedThroughput={"ReadCapacityUnits": 10, "WriteCapacityUnits": 10})
    config = dynamo_config(tmp_path, moto_server, "old")
    assert_one_line_exit_2(run_cli("serve", "--config", str(config)), "has no index 'name-index'")
    result = run_cli("create-tables", "--config", str(config))
    assert result.returncode == 0, result.stderr
    assert "table 'departments-old' exists; added index 'name-index'" in result.stdout
    assert "table 'events-old' exists; added index 'department-date-index'" in result.stdout
    index = client.describe_table(TableName="events-old")["Table"]["GlobalSecondaryIndexes"][0]
    assert index["IndexName"] == "department-date-index" and index["ProvisionedThroughput"]["ReadCapacityUnits"] == 10


def test_unreachable_endpoint_at_start(tmp_path):
    sock, port = bind_unused_port()
    sock.close()
    config = dynamo_config(tmp_path, f"http://127.0.0.1:{port}", "x")
    assert_one_line_exit_2(run_cli("serve", "--config", str(config)), f"cannot reach http://127.0.0.1:{port}")


async def test_provisioned_billing(moto_server):
    storage = make_dynamo(dynamo_options(moto_server, billing_mode="PROVISIONED", read_capacity=3, write_capacity=2))
    try:
        await storage.create_tables()
        table = storage.client.describe_table(TableName=storage.events_table)["Table"]
        assert table["ProvisionedThroughput"]["ReadCapacityUnits"] == 3
        assert table["GlobalSecondaryIndexes"][0]["ProvisionedThroughput"]["WriteCapacityUnits"] == 2
    finally:
        await storage.close()


async def test_on_demand_by_default(dynamo):
    table = dynamo.client.describe_table(TableName=dynamo.departments_table)["Table"]
    assert table["BillingModeSummary"]["BillingMode"] == "PAY_PER_REQUEST"


def test_rejected_credentials_at_start(tmp_path, outage_moto):
    """moto checks credentials against its IAM once told to (`/moto-api/reset-auth`)."""
    import urllib.request

    def require_auth(count: str) -> None:
        request = urllib.request.Request(f"{outage_moto.url}/moto-api/reset-auth", data=count.encode(), method="POST",
                                         headers={"Content-Type": "application/json"})
        urllib.request.urlopen(request, timeout=10).read()

    config = dynamo_config(tmp_path, outage_moto.url, "auth")
    require_auth("0")
    try:
        assert_one_line_exit_2(run_cli("serve", "--config", str(config)), "rejected the AWS credentials",
                               "AWS_ACCESS_KEY_ID")
    finally:
        require_auth("inf")


def test_environment_names_region_and_tables(tmp_path, monkeypatch):
    from calsync.server.config import load_config

    monkeypatch.setenv("AWS_REGION", "us-west-2")
    monkeypatch.setenv("DEPARTMENTS_TABLE", "teams")
    monkeypatch.setenv("EVENTS_TABLE", "")  # empty means the default, as in a shell
    monkeypatch.setenv("DYNAMODB_ENDPOINT_URL", "http://localhost:8001")
    options = load_config(str(write_config(tmp_path, "storage:\n  backend: dynamodb\n"))).storage_options
    assert (options.region, options.departments_table, options.events_table, options.endpoint_url) == (
        "us-west-2", "teams", "events", "http://localhost:8001")


async def test_unprocessed_batch_items_are_retried(dynamo):
    department = (await dynamo.create_department("개발팀")).record
    for i in range(30):
        (await dynamo.create_event(department.id, {"event_date": "2024-01-20", "title": f"회의 {i}"})).record
    real = dynamo.client.batch_write_item
    calls = []

    def half_done(RequestItems):
        calls.append(RequestItems)
        if len(calls) > 1:
            return real(RequestItems=RequestItems)
        (table, requests), = RequestItems.items()
        real(RequestItems={table: requests[:5]})
        return {"UnprocessedItems": {table: requests[5:]}}

    dynamo.client.batch_write_item = half_done
    (await dynamo.delete_department(department.id)).record
    assert len(calls) >= 3
    assert dynamo.client.scan(TableName=dynamo.events_table)["Count"] == 0


async def test_two_servers_editing_one_event_keep_the_feed_whole(moto_server):
    """Each server writes on its own thread; between them only DynamoDB's conditions decide.
    A change that loses the race is recorded as a noop and redone on what is there now."""
    options = dynamo_options(moto_server)
    first, second = make_dynamo(options), make_dynamo(options)
    await first.create_tables()
    try:
        department = (await first.create_department("개발팀")).record
        event = (await first.create_event(department.id, {"event_date": "2024-01-20", "title": "회의"})).record
        results = await asyncio.gather(*(storage.update_event(event.id, {"title": f"{i}"}, if_versions={1})
                                         for i, storage in enumerate([first, second] * 4)), return_exceptions=True)
        assert sum(type(r).__name__ == "Change" for r in results) == 1
        assert all(type(r).__name__ in ("Change", "VersionConflict") for r in results)
        await asyncio.gather(*(storage.update_event(event.id, {"description": f"{i}"})
                               for i, storage in enumerate([first, second] * 3)))
        stored = await first.get_event(event.id)
        assert stored.version == 8
        page = await second.read_feed(department.id)
        assert list(page.events) == [stored] and page.events[0].seq == stored.seq == page.seq
        changes = await second.read_feed(department.id, Cursor(1, department.epoch))
        assert [e.version for e in changes.events] == [8]
    finally:
        await first.close()
        await second.close()


async def test_a_seq_left_unwritten_by_a_dead_writer_is_closed(dynamo):
    """Answers stop below a seq still being written; one whose writer died is closed as
    nothing after gap_seconds, and the writer, were it only slow, takes a new seq."""
    dynamo.gap_seconds = 0.3
    department = (await dynamo.create_department("개발팀")).record
    first = (await dynamo.create_event(department.id, {"event_date": "2024-01-20", "title": "하나"})).record
    dead = dynamo._take_seq(department.id)  # a server counted seq 2, then died before writing it
    third = (await dynamo.create_event(department.id, {"event_date": "2024-01-21", "title": "셋"})).record
    assert third.seq == 3
    held = await dynamo.read_feed(department.id)
    assert (held.seq, [e.id for e in held.events]) == (1, [first.id])  # 3 is done, but 2 is not
    assert (await dynamo.feed_state(department.id)).seq == 1
    await asyncio.sleep(0.35)
    page = await dynamo.read_feed(department.id, Cursor(1, department.epoch))
    assert (page.seq, [e.id for e in page.events]) == (3, [third.id])
    full = await dynamo.read_feed(department.id)
    assert (full.seq, [e.id for e in full.events]) == (3, [first.id, third.id])
    assert (await dynamo.feed_state(department.id)).seq == 3
    # the slow writer of seq 2 comes back: its seq is closed, so it must take another
    late = Event.new(department.id, {"event_date": "2024-01-22", "title": "늦음"})
    assert not dynamo._put_pending(department.id, dead, "put", late.id, 0, late)
    assert (await dynamo.read_feed(department.id)).events == full.events


def test_two_deployments_naming_only_their_two_tables_never_share_a_change_log(tmp_path, moto_server):
    """Contract 7: the change log's default name comes from the events table's."""
    env = {**os.environ, "DYNAMODB_ENDPOINT_URL": moto_server}
    names = {}
    for team in ("alpha", "beta"):
        folder = tmp_path / team
        folder.mkdir()
        suffix = f"{team}-{uuid.uuid4().hex[:6]}"
        (folder / ".env").write_text(f"DEPARTMENTS_TABLE=departments-{suffix}\nEVENTS_TABLE=events-{suffix}\n")
        config = folder / "calsync.yaml"
        shutil.copy(REPO / "calsync.yaml", config)
        text = config.read_text().replace("backend: sqlite ", "backend: dynamodb")
        config.write_text(text)
        created = run_cli("create-tables", "--config", str(config), env=env)
        assert created.returncode == 0, created.stderr
        assert f"created table 'events-{suffix}_changes'" in created.stdout
        names[team] = f"events-{suffix}_changes"
    assert names["alpha"] != names["beta"]
    tables = boto3.client("dynamodb", endpoint_url=moto_server).list_tables()["TableNames"]
    assert set(names.values()) <= set(tables)


async def test_a_store_made_with_the_old_changes_table_keeps_working(moto_server, caplog):
    """Made when the change log was always `changes`: serving goes on with it, and says how
    to keep it."""
    suffix = uuid.uuid4().hex[:8]
    old = dynamo_options(moto_server, events_table=f"events-{suffix}", changes_table="changes")
    before = make_dynamo(old)
    await before.create_tables()
    await before.open()
    department = (await before.create_department("개발팀")).record
    event = (await before.create_event(department.id, {"event_date": "2024-01-20", "title": "회의"})).record
    await before.close()

    upgraded = make_dynamo(dataclasses.replace(old, changes_table=""))  # the new default
    try:
        with caplog.at_level("WARNING", logger="calsync.dynamodb"):
            await upgraded.create_tables()  # creates nothing new beside the old log
            await upgraded.open()
        assert upgraded.changes_table == "changes"
        assert "changes_table: changes" in caplog.text
        page = await upgraded.read_feed(department.id)
        assert [e.id for e in page.events] == [event.id] and page.seq == 1
        tables = boto3.client("dynamodb", endpoint_url=moto_server).list_tables()["TableNames"]
        assert f"events-{suffix}_changes" not in tables
    finally:
        await upgraded.close()
        boto3.client("dynamodb", endpoint_url=moto_server).delete_table(TableName="changes")


async def test_changes_in_flight_over_several_pages_are_all_answered(dynamo, monkeypatch):
    """The seqs above the committed mark are read a page at a time: a page's end is no gap."""
    monkeypatch.setattr("calsync.storage.dynamodb.feed.FRONTIER_PAGE", 7)
    department = (await dynamo.create_department("개발팀")).record
    events = [Event.new(department.id, {"event_date": "2024-03-01", "title": f"일정 {i}"}) for i in range(30)]
    await dynamo.import_events(events)
    page = await dynamo.read_feed(department.id)
    assert (page.seq, len(page.events)) == (30, 30)
    assert (await dynamo.feed_state(department.id)).seq == 30


class Died(Exception):
    """The writer's process died right here."""


async def test_a_write_that_landed_and_was_replaced_before_its_writer_finished_stays_replaced(moto_server):
    """An update lands in the events table and its writer dies before marking its change done;
    another process deletes the event (reading it at the update's seq); the update's seq is
    resolved later. The event stays deleted in full answers (it came back once: the delete
    named the unresolved update as what it replaced, so the put before stayed)."""
    options = dynamo_options(moto_server)
    dying, other = make_dynamo(options), make_dynamo(options)
    await dying.create_tables()
    for storage in (dying, other):
        storage.gap_seconds = 0.2
        await storage.open()
    try:
        department = (await other.create_department("개발팀")).record
        event = (await other.create_event(department.id, {"event_date": "2024-01-20", "title": "회의"})).record

        def note_table(params, context, **_):
            context["table"] = params.get("TableName")

        def die_after_the_event_write(context, **_):
            if context.get("table") == options.events_table:
                raise Died()

        dying.client.meta.events.register("before-parameter-build.dynamodb.PutItem", note_table)
        dying.client.meta.events.register("after-call.dynamodb.PutItem", die_after_the_event_write)
        with pytest.raises(Died):
            await dying.update_event(event.id, {"title": "고침"})
        assert (await other.get_event(event.id)).title == "고침"  # it landed; its change is still pending
        await other.delete_event(event.id)
        await asyncio.sleep(0.3)
        for _ in range(5):
            page = await other.read_feed(department.id)
            await asyncio.sleep(0.1)
        assert page.events == [] and page.seq == int(other._department_item(department.id)["seq"])
        with pytest.raises(EventNotFound):
            await other.get_event(event.id)
    finally:
        await dying.close()
        await other.close()
