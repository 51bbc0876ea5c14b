"""The OpenAPI document (contract 10): valid OpenAPI 3.1, every REST route in it, and
schemathesis against a live server finds no 5xx and no answer the document does not allow."""
from __future__ import annotations

import json
import urllib.request

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from openapi_spec_validator import validate
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

from calsync.handlers import departments, events, openapi, status
from calsync.handlers import ics as ics_feed
from tests.fuzzing import FuzzServer


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
        assert any(path.replace("{department_id}", "{id}").replace("{event_id}", "{id}") == as_path
                   for path in documented), pattern
    create = document["paths"]["/api/events/{department_id}"]["post"]
    assert {"201", "400", "401", "403", "404", "409", "413", "422", "503"} <= set(create["responses"])
    event = document["components"]["schemas"]["Event"]["properties"]
    assert (event["title"]["maxLength"], event["event_date"]["format"]) == (200, "date")  # from the validating schema


@pytest.fixture(scope="module")
def loaded_schema(live_server, document):
    schema = schemathesis.openapi.from_dict(document)
    schema.config.base_url = live_server.url
    return schema


def operations() -> list[str]:
    from calsync.handlers.openapi import build_spec
    return [f"{method.upper()} {path}" for path, item in build_spec()["paths"].items() for method in item]


@pytest.mark.parametrize("operation", operations())
def test_schemathesis_finds_no_server_error_and_no_answer_outside_the_document(loaded_schema, operation):
    """schemathesis makes the requests (from the document) and checks the answers; hypothesis
    drives it directly rather than through schemathesis's pytest plugin."""
    method, path = operation.split(" ", 1)
    found = [result.ok() for result in loaded_schema.get_all_operations()]
    target = next(op for op in found if op.method.upper() == method and op.path == path)
    checks = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
    called = []

    @settings(max_examples=40, deadline=None, derandomize=True, database=None, suppress_health_check=list(HealthCheck))
    @given(target.as_strategy())
    def run(case) -> None:
        case.call_and_validate(checks=checks)
        called.append(case)

    run()
    assert called


def test_partial_update_bodies_have_no_defaults_a_client_would_send(document):
    """A generated client fills in every default: an update of the title must not send ""
    for the description, time and url (issue 18)."""
    for name in ("DepartmentChanges", "EventChanges"):
        schema = document["components"]["schemas"][name]
        assert all("default" not in field for field in schema["properties"].values()), name
        assert schema["minProperties"] == 1 and not schema.get("required")
