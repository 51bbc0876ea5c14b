"""The OpenAPI document (contract 10): valid OpenAPI 3.1, every REST route in it, and
schemathesis against a live server finds no 5xx and no answer the document does not allow."""
from __future__ import annotations

import datetime
import json
import os
import re
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
from openapi_spec_validator import validate

from calsync.handlers import departments, events, openapi, status
from calsync.handlers import ics as ics_feed
from tests.fuzzing import FuzzServer
from tests.tools import node_tool


@pytest.fixture(scope="module")
def live_server():
    server = FuzzServer(auth=False)
    yield server
    server.close()


@pytest.fixture(scope="module")
def document(live_server) -> dict:
    with urllib.request.urlopen(live_server.url + "/api/openapi.json", timeout=10) as response:
        assert response.headers["Content-Type"].startswith("application/json")
        return json.loads(response.read())


def test_the_document_is_valid_openapi_3_1_and_covers_every_rest_route(document):
    validate(document)
    assert document["openapi"] == "3.1.0"
    routes = [pattern for module in (status, departments, ics_feed, events, openapi) for pattern, _ in module.routes]
    documented = set(document["paths"])
    for pattern in routes:
        if pattern == r"/api/openapi\.json":
            continue
        as_path = pattern.replace(r"\.", ".").replace("([^/]+)", "{id}")
        assert any(path.replace("{department_id}", "{id}") == as_path for path in documented), pattern
    create = document["paths"]["/api/events/{id}"]["post"]
    assert {"201", "400", "401", "403", "404", "409", "413", "422", "431", "503"} <= set(create["responses"])
    event = document["components"]["schemas"]["Event"]["properties"]
    assert (event["title"]["maxLength"], event["event_date"]["format"]) == (200, "date")  # from the validating schema


def test_the_document_says_what_clients_need(document):
    """Issue 18: servers, tags, formats, the replay header, and no token on open routes."""
    assert document["servers"] == [{"url": "/", "description": "이 문서를 준 서버"}]
    assert {tag["name"] for tag in document["tags"]} == {"status", "departments", "events", "feeds"}
    assert all(operation.get("tags") for item in document["paths"].values() for operation in item.values())
    schemas = document["components"]["schemas"]
    assert schemas["Event"]["properties"]["id"]["format"] == "uuid"
    assert schemas["Event"]["properties"]["last_modified"]["format"] == "date-time"
    assert schemas["Department"]["properties"]["created_at"]["format"] == "date-time"
    events = document["paths"]["/api/events/{id}"]
    assert set(events) == {"get", "post", "put", "delete"}
    assert "부서 id" in events["get"]["parameters"][0]["description"]
    assert "이벤트 id" in events["put"]["parameters"][0]["description"]
    assert "Idempotent-Replayed" in events["post"]["responses"]["201"]["headers"]
    assert "Idempotent-Replayed" in document["paths"]["/api/departments"]["post"]["responses"]["201"]["headers"]
    for path in ("/", "/health", "/ready", "/metrics"):
        health = document["paths"][path]["get"]
        assert health["security"] == [{}] and not {"401", "403"} & set(health["responses"]), path
    assert {"401", "403"} <= set(document["paths"]["/api/departments"]["get"]["responses"])
    title = schemas["NewEvent"]["properties"]["title"]["pattern"]
    assert re.match(title, "회의") and not re.match(title, "   ") and not re.match(title, "회\x1b의")
    url = schemas["NewEvent"]["properties"]["url"]
    assert re.match(url["pattern"], "https://example.com/x") and not re.match(url["pattern"], "example.com")
    assert url["type"] == ["string", "null"]  # old clients send null for ""
    assert re.match(events["post"]["parameters"][1]["schema"]["pattern"], "abc-123")
    assert not re.match(events["post"]["parameters"][1]["schema"]["pattern"], "키")


def test_schemathesis_with_all_its_checks_passes(live_server):
    """schemathesis's own command line, every check, every phase (examples, coverage,
    fuzzing, stateful along the document's links), as a user of the document would run it.
    The config names the two answers no OpenAPI document can predict; the hooks make each
    well-formed Idempotency-Key unique (both files say why)."""
    here = Path(__file__).parent
    env = {**os.environ, "SCHEMATHESIS_HOOKS": "tests.schemathesis_hooks",
           "PYTHONPATH": os.pathsep.join([str(here.parent), os.environ.get("PYTHONPATH", "")])}
    run = subprocess.run(
        [str(Path(sys.executable).parent / "st"), "--no-color", "--config-file", str(here / "schemathesis.toml"),
         "run", live_server.url + "/api/openapi.json", "--checks", "all", "--max-examples", "40", "--seed", "18"],
        capture_output=True, text=True, env=env, cwd=here.parent, timeout=600)
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-2000:]
    assert " passed" in run.stdout and "failed" not in run.stdout


def test_redocly_lint_passes(document, tmp_path):
    """Redocly's recommended rules (issue 18: two paths that differed only by a parameter's
    name failed them)."""
    redocly = node_tool(".bin/redocly")
    spec = tmp_path / "openapi.json"
    spec.write_text(json.dumps(document, ensure_ascii=False))
    run = subprocess.run([str(redocly), "lint", "--format", "stylish", str(spec)], capture_output=True, text=True,
                         timeout=300, env={**os.environ, "REDOCLY_TELEMETRY": "off", "REDOCLY_SUPPRESS_UPDATE_NOTICE": "true"})
    assert run.returncode == 0, run.stdout + run.stderr
    assert "warning" not in (run.stdout + run.stderr).lower().replace("deprecation warning", ""), run.stdout


def test_partial_update_bodies_have_no_defaults_a_client_would_send(document):
    """A generated client fills in every default: an update of the title must not send ""
    for the description, time and url (issue 18)."""
    for name in ("DepartmentChanges", "EventChanges"):
        schema = document["components"]["schemas"][name]
        assert all("default" not in field for field in schema["properties"].values()), name
        assert schema["minProperties"] == 1 and not schema.get("required")


def test_a_generated_client_updates_only_the_fields_it_sets(live_server, document, tmp_path):
    """openapi-python-client, as many will call calsync: generated from the served document,
    it creates an event with every field, then changes its title alone — the other fields must
    stay as they were (issue 18: defaults in the PUT schema made it send "" for each)."""
    spec = tmp_path / "openapi.json"
    spec.write_text(json.dumps(document))
    tools = str(Path(sys.executable).parent)
    generated = subprocess.run(
        [str(Path(tools) / "openapi-python-client"), "generate", "--path", str(spec), "--meta", "none",
         "--output-path", str(tmp_path / "calsync_client")],
        capture_output=True, text=True, env={**os.environ, "PATH": tools + os.pathsep + os.environ["PATH"]}, timeout=300)
    assert generated.returncode == 0 and "Warning" not in generated.stdout, generated.stdout + generated.stderr
    sys.path.insert(0, str(tmp_path))
    try:
        from calsync_client import Client
        from calsync_client.api.departments import create_department
        from calsync_client.api.events import create_event, list_events, update_event
        from calsync_client.models import EventChanges, NewDepartment, NewEvent
    finally:
        sys.path.remove(str(tmp_path))
    client = Client(base_url=live_server.url)
    department = create_department.sync(client=client, body=NewDepartment(name="생성된 클라이언트")).department
    created = create_event.sync(department.id, client=client, body=NewEvent(
        event_date=datetime.date(2026, 12, 24), title="송년회", description="3층", time="18:00",
        url="https://example.com/party")).event
    updated = update_event.sync(created.id, client=client, body=EventChanges(title="송년회 (변경)")).event
    assert (updated.title, updated.description, updated.time, updated.url) == (
        "송년회 (변경)", "3층", "18:00", "https://example.com/party")
    listed = list_events.sync(department.id, client=client)
    assert [(e.title, e.description, e.time, e.url) for e in listed.events] == [
        ("송년회 (변경)", "3층", "18:00", "https://example.com/party")]
    assert listed.seq == updated.seq and listed.reset is True
