"""`/metrics` (contract 10): Prometheus text that moves as requests, connections and pushes happen."""
from __future__ import annotations

import asyncio

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.client import api
from tests.rawhttp import KeepAliveConnection


@pytest.fixture
def backend() -> str:
    return "sqlite"


async def scrape(client) -> dict[tuple[str, tuple], float]:
    response = await client.fetch("/metrics")
    assert response.code == 200 and response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    samples = {}
    for family in text_string_to_metric_families(response.body.decode()):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples: dict, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


async def test_metrics_follow_requests_connections_and_pushes(http_server_client, connect):
    client = http_server_client
    before = await scrape(client)
    assert value(before, "calsync_websocket_connections") == 0 and value(before, "calsync_rooms") == 0

    _, body = await api(client, "POST", "/api/departments", {"name": "개발팀"})
    department_id = body["department"]["id"]
    await api(client, "GET", f"/api/events/{department_id}")
    await api(client, "GET", "/nowhere")
    await api(client, "POST", f"/api/events/{department_id}", {"title": ""})
    first, second = await connect(), await connect()
    await first.join(department_id)
    await second.join(department_id)
    await second.request("join_department", {})  # an error on the WebSocket
    during = await scrape(client)
    assert value(during, "calsync_websocket_connections") == 2 and value(during, "calsync_rooms") == 1

    await api(client, "POST", f"/api/events/{department_id}", {"event_date": "2024-01-20", "title": "회의"})
    await first.receive()
    await second.receive()
    after = await scrape(client)
    assert value(after, "calsync_http_requests_total", route="/api/departments", method="POST", status="201") == 1
    assert value(after, "calsync_http_requests_total", route="/api/events/{id}", method="GET", status="200") == 1
    assert value(after, "calsync_http_requests_total", route="unmatched", method="GET", status="404") == 1
    assert value(after, "calsync_http_request_duration_seconds_count", route="/api/events/{id}", method="POST") == 2
    assert value(after, "calsync_errors_total", code="not_found", transport="rest") == 1
    assert value(after, "calsync_errors_total", code="validation_error", transport="rest") == 1
    assert value(after, "calsync_errors_total", code="validation_error", transport="ws") == 1
    # the event's push reached both members, in one fan-out
    assert value(after, "calsync_pushes_sent_total") - value(during, "calsync_pushes_sent_total") == 2
    assert value(after, "calsync_push_fanout_seconds_count") - value(during, "calsync_push_fanout_seconds_count") == 1
    assert value(after, "calsync_storage_call_duration_seconds_count", operation="create_event", backend="sqlite") == 1
    assert value(after, "calsync_storage_call_duration_seconds_count", operation="create_department",
                 backend="sqlite") == 1

    first.close()
    second.close()
    for _ in range(50):
        if value(await scrape(client), "calsync_websocket_connections") == 0:
            break
        await asyncio.sleep(0.05)
    final = await scrape(client)
    assert value(final, "calsync_websocket_connections") == 0 and value(final, "calsync_rooms") == 0


async def test_methods_no_one_knows_share_one_label(http_server_client, base_url):
    """Contract 13: whatever method a client makes up, the series stay bounded."""
    for method in ("FOO1", "FOO2", "BREW", "GET"):
        connection = await KeepAliveConnection.open(base_url)
        try:
            status, _, _ = await connection.request(method, "/health")
            assert status in (200, 405)
        finally:
            connection.close()
    samples = await scrape(http_server_client)
    methods = {dict(labels).get("method") for (name, labels) in samples if name == "calsync_http_requests_total"}
    assert "other" in methods and not methods & {"FOO1", "FOO2", "BREW"}
