"""A bounded fuzz run in the suite; `python -m tests.fuzz_long` runs the long one."""
from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings

from tests.fuzzing import FRAMES, FuzzServer, Request, WsFuzzer, fuzz_request, requests

FUZZ = settings(max_examples=400, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example])


@pytest.fixture(scope="module")
def fuzz_server():
    server = FuzzServer()
    yield server
    server.close()


@pytest.fixture(scope="module")
def ws_fuzzer(fuzz_server):
    fuzzer = WsFuzzer(fuzz_server)
    yield fuzzer
    fuzzer.close()


def test_every_rest_route_answers_hostile_requests_with_the_contract(fuzz_server):
    statuses: set[int] = set()

    @FUZZ
    @given(requests())
    def run(request: Request) -> None:
        statuses.add(fuzz_request(fuzz_server, request))

    run()
    assert {400, 401, 404}.issubset(statuses) and any(s < 300 for s in statuses)  # the run reached deep and shallow


def test_hostile_websocket_frames_get_errors_and_the_connection_stays(ws_fuzzer):
    events: set[str] = set()

    @FUZZ
    @given(FRAMES)
    def run(frame: str | bytes) -> None:
        events.update(reply["event"] for reply in ws_fuzzer.send(frame))

    run()
    assert "error" in events


@pytest.mark.parametrize("raw", [
    b'{"name": "\\ud800"}', b"[" * 100_000, b'{"name": "' + "\u202e".encode() * 40 + b'"}', b"\xff" * 100,
])
def test_known_nasty_bodies(fuzz_server, raw):
    fuzz_request(fuzz_server, Request("POST", "/api/departments", {"Authorization": "Bearer {token}"}, raw))


@pytest.mark.parametrize("path", ["/app/%00", "/app/..%2f..%2fetc%2fpasswd", "/app/../setup.cfg", "/app/__init__.py",
                                  "/app/%FF", "/api/departments/%00/events.ics"])
def test_known_nasty_paths(fuzz_server, path):
    status = fuzz_request(fuzz_server, Request("GET", path, {"Authorization": "Bearer {token}"}, b""))
    assert status in (400, 403, 404)  # never a file outside the web folder, never a 500


def test_a_token_argument_that_is_not_utf8_is_a_bad_token(fuzz_server):
    request = Request("GET", "/api/departments/{department}/events.ics?token=%FF", {}, b"\xff\xfe{}")
    assert fuzz_request(fuzz_server, request) == 401
    assert fuzz_request(fuzz_server, Request("GET", "/health", {}, b"")) == 200  # on the same connection
