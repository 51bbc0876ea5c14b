"""Tokens (contract 9.1): the role × department rules over REST and the WebSocket, push
filtering, expiry, and tokens that must never pass."""
from __future__ import annotations

import asyncio
import json
import time
import warnings

import jwt
import pytest
import tornado.httpclient
import tornado.websocket

from calsync.app import make_app
from calsync.server.access import Tokens
from calsync.server.config import LimitsConfig
from tests.client import MEETING, SyncClient, api, api_full
from tests.rawhttp import KeepAliveConnection

SECRET = "an-office-secret-of-at-least-32-characters"
pytestmark = pytest.mark.usefixtures("http_server")


@pytest.fixture(params=["memory", "sqlite"])
def backend(request) -> str:
    """The rules do not depend on the store; two backends keep the matrix quick."""
    return request.param


@pytest.fixture
def tokens() -> Tokens:
    return Tokens(SECRET)


@pytest.fixture
def app(storage, hub, server_config, backend, tokens):
    return make_app(storage, hub, server_config, backend, tokens=tokens, auth_timeout=0.5)


def bearer(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def admin(tokens) -> dict:
    return bearer(tokens.issue("admin", subject="관리자"))


async def setup_two_departments(client, admin: dict) -> tuple[dict, dict]:
    own = (await api(client, "POST", "/api/departments", {"name": "개발팀"}, headers=admin))[1]["department"]
    other = (await api(client, "POST", "/api/departments", {"name": "인사팀"}, headers=admin))[1]["department"]
    return own, other


def allowed(role: str, scope: str, target: str, action: str) -> bool:
    """The table of contract 9.1, written out independently of the server's code."""
    reads = role == "admin" or scope == "*" or target == "own"
    if action in ("create_department", "update_department", "delete_department"):
        return role == "admin"
    if action in ("get_department", "list_events", "calendar_feed", "join_department", "sync_request"):
        return reads
    return reads and role in ("write", "admin")


ACTIONS = ["get_department", "update_department", "delete_department", "list_events", "calendar_feed",
           "create_event", "update_event", "delete_event"]
WS_ACTIONS = ["join_department", "sync_request"]


async def act(client, action: str, department: dict, headers: dict, admin: dict) -> int:
    department_id = department["id"]
    if action == "get_department":
        return (await api(client, "GET", f"/api/departments/{department_id}", headers=headers))[0]
    if action == "update_department":
        return (await api(client, "PUT", f"/api/departments/{department_id}", {"description": "바뀜"},
                          headers=headers))[0]
    if action == "delete_department":
        target = (await api(client, "POST", "/api/departments", {"name": f"지울팀 {time.time()}"},
                            headers=admin))[1]["department"]
        return (await api(client, "DELETE", f"/api/departments/{target['id']}", headers=headers))[0]
    if action == "list_events":
        return (await api(client, "GET", f"/api/events/{department_id}", headers=headers))[0]
    if action == "calendar_feed":
        response = await client.fetch(f"/api/departments/{department_id}/events.ics", headers=headers,
                                      raise_error=False)
        return response.code
    if action == "create_event":
        return (await api(client, "POST", f"/api/events/{department_id}", MEETING, headers=headers))[0]
    event = (await api(client, "POST", f"/api/events/{department_id}", MEETING, headers=admin))[1]["event"]
    if action == "update_event":
        return (await api(client, "PUT", f"/api/events/{event['id']}", {"title": "x"}, headers=headers))[0]
    return (await api(client, "DELETE", f"/api/events/{event['id']}", headers=headers))[0]


@pytest.mark.parametrize("role", ["read", "write", "admin"])
@pytest.mark.parametrize("scope", ["own", "*"])
async def test_role_by_department_by_action_over_rest(http_server_client, tokens, admin, role, scope):
    own, other = await setup_two_departments(http_server_client, admin)
    headers = bearer(tokens.issue(role, [own["id"]] if scope == "own" else "*", subject=f"{role}-{scope}"))
    for target, department in (("own", own), ("other", other)):
        for action in ACTIONS:
            status = await act(http_server_client, action, department, headers, admin)
            expected = allowed(role, scope, target, action)
            assert (status < 300) == expected and (expected or status == 403), (role, scope, target, action, status)
    status = (await api(http_server_client, "POST", "/api/departments", {"name": f"새팀 {role} {scope}"},
                        headers=headers))[0]
    assert (status == 201) == allowed(role, scope, "own", "create_department")
    _, body = await api(http_server_client, "GET", "/api/departments", headers=headers)
    names = {d["name"] for d in body["departments"]}
    assert ("인사팀" in names) == (role == "admin" or scope == "*") and "개발팀" in names


async def test_forbidden_and_unauthorized_shapes(http_server_client, tokens, admin):
    own, other = await setup_two_departments(http_server_client, admin)
    reader = bearer(tokens.issue("read", [own["id"]]))
    assert await api(http_server_client, "GET", f"/api/events/{other['id']}", headers=reader) == (
        403, {"success": False, "code": "forbidden", "message": "권한이 없습니다."})
    status, body, headers = await api_full(http_server_client, "GET", "/api/departments")
    assert (status, body) == (401, {"success": False, "code": "unauthorized", "message": "인증이 필요합니다."})
    assert headers["WWW-Authenticate"] == "Bearer"


def hs512(claims: dict) -> str:
    """Signed with the right secret, by an algorithm the server does not take."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", jwt.warnings.InsecureKeyLengthWarning)  # our secret is short for SHA-512
        return jwt.encode(claims, SECRET, algorithm="HS512")


def forged_tokens() -> dict[str, str]:
    now = int(time.time())
    claims = {"sub": "mallory", "role": "admin", "departments": "*", "exp": now + 3600}
    none_header = jwt.utils.base64url_encode(json.dumps({"alg": "none", "typ": "JWT"}).encode()).decode()
    none_body = jwt.utils.base64url_encode(json.dumps(claims).encode()).decode()
    return {
        "unsigned (alg none)": f"{none_header}.{none_body}.",
        "another secret": jwt.encode(claims, "x" * 40, algorithm="HS256"),
        "another algorithm": hs512(claims),
        "expired": jwt.encode({**claims, "exp": now - 5}, SECRET, algorithm="HS256"),
        "no exp": jwt.encode({k: v for k, v in claims.items() if k != "exp"}, SECRET, algorithm="HS256"),
        "unknown role": jwt.encode({**claims, "role": "root"}, SECRET, algorithm="HS256"),
        "departments not a list": jwt.encode({**claims, "role": "read", "departments": 5}, SECRET, algorithm="HS256"),
        "exp a string": jwt.encode({**claims, "exp": str(now + 3600)}, SECRET, algorithm="HS256"),
        "exp true": jwt.encode({**claims, "exp": True}, SECRET, algorithm="HS256"),
        "garbage": "not.a.token",
        "empty": "",
    }


async def test_tokens_that_must_never_pass(http_server_client):
    for name, token in forged_tokens().items():
        status, body = await api(http_server_client, "GET", "/api/departments", headers=bearer(token))
        assert (status, body["code"]) == (401, "unauthorized"), name
    for header in ("Basic dXNlcjpwYXNz", "Bearer", "bearer  "):
        assert (await api(http_server_client, "GET", "/api/departments", headers={"Authorization": header}))[0] == 401


async def test_401_and_403_keep_the_connection_usable(http_server_client, base_url, tokens, admin):
    own, other = await setup_two_departments(http_server_client, admin)
    reader = f"Bearer {tokens.issue('read', [own['id']])}"
    for headers, expected in (({}, 401), ({"Authorization": "Bearer bad"}, 401),
                              ({"Authorization": reader}, 403)):
        connection = await KeepAliveConnection.open(base_url)
        try:
            status, answer_headers, _ = await connection.request("GET", f"/api/events/{other['id']}", b"", headers)
            assert status == expected and answer_headers.get("connection", "").lower() != "close"
            assert (await connection.request("GET", "/health"))[0] == 200
        finally:
            connection.close()


async def test_status_routes_and_preflight_stay_open(http_server_client):
    for path in ("/", "/health", "/ready"):
        assert (await api(http_server_client, "GET", path))[0] == 200, path
    response = await http_server_client.fetch("/api/departments", method="OPTIONS", raise_error=False)
    assert response.code == 204
    assert (await api(http_server_client, "GET", "/nope"))[0] == 404


async def test_idempotency_keys_are_per_subject(http_server_client, tokens, admin):
    own, _ = await setup_two_departments(http_server_client, admin)
    path, key = f"/api/events/{own['id']}", {"Idempotency-Key": "same-key"}
    kim = {**bearer(tokens.issue("write", [own["id"]], subject="kim")), **key}
    lee = {**bearer(tokens.issue("write", [own["id"]], subject="lee")), **key}
    first = await api_full(http_server_client, "POST", path, MEETING, headers=kim)
    other = await api_full(http_server_client, "POST", path, MEETING, headers=lee)
    again = await api_full(http_server_client, "POST", path, MEETING, headers=kim)
    assert first[1]["event"]["id"] != other[1]["event"]["id"]
    assert again[1] == first[1] and again[2]["Idempotent-Replayed"] == "true"


# -- the WebSocket ---------------------------------------------------------------------------
async def test_websocket_token_by_url_header_or_auth_message(http_server_client, ws_url, tokens, admin):
    own, other = await setup_two_departments(http_server_client, admin)
    token = tokens.issue("read", [own["id"]], subject="kim")
    for kwargs, url in (({}, f"{ws_url}?token={token}"), ({"headers": bearer(token)}, ws_url)):
        client = await SyncClient.connect(url, **kwargs)
        reply = await client.request("join_department", {"department_id": own["id"]})
        assert reply["event"] == "joined_department"
        for event in ("join_department", "sync_request"):
            reply = await client.request(event, {"department_id": other["id"]}, "x")
            assert reply == {"event": "error", "id": "x", "data": {"message": "권한이 없습니다.", "code": "forbidden",
                                                                   "request": event}}
        assert (await client.request("ping"))["event"] == "pong"  # still open
        client.close()

    client = await SyncClient.connect(ws_url)
    reply = await client.request("join_department", {"department_id": own["id"]})
    assert (reply["event"], reply["data"]["code"]) == ("error", "unauthorized")
    assert (await client.request("ping"))["event"] == "pong"
    reply = await client.request("auth", {"token": "wrong"})
    assert (reply["event"], reply["data"]["code"]) == ("error", "unauthorized")
    assert await client.request("auth", {"token": token}, 1) == {
        "event": "authenticated", "id": 1, "data": {"sub": "kim", "role": "read"}}
    assert (await client.request("join_department", {"department_id": own["id"]}))["event"] == "joined_department"
    await asyncio.sleep(0.8)  # past auth.timeout: authenticated, so it stays
    assert (await client.request("ping"))["event"] == "pong"
    client.close()


async def test_a_bad_token_refuses_the_handshake(ws_url, tokens):
    for token in forged_tokens().values():
        if not token:
            continue
        for request in (tornado.httpclient.HTTPRequest(f"{ws_url}?token={token}"),
                        tornado.httpclient.HTTPRequest(ws_url, headers=bearer(token))):
            with pytest.raises(tornado.httpclient.HTTPClientError) as refused:
                await tornado.websocket.websocket_connect(request)
            assert refused.value.code == 401


async def test_no_token_in_time_or_an_expired_one_closes_with_4401(ws_url, tokens):
    silent = await SyncClient.connect(ws_url)
    assert await asyncio.wait_for(silent.connection.read_message(), 5) is None
    assert silent.connection.close_code == 4401
    short = await SyncClient.connect(ws_url)
    claims = {"sub": "brief", "role": "read", "departments": "*", "exp": int(time.time()) + 1}
    reply = await short.request("auth", {"token": jwt.encode(claims, SECRET, algorithm="HS256")})
    assert reply["event"] == "authenticated"
    assert await asyncio.wait_for(short.connection.read_message(), 5) is None
    assert short.connection.close_code == 4401


async def test_pushes_reach_only_connections_that_may_read(http_server_client, ws_url, tokens, admin):
    own, other = await setup_two_departments(http_server_client, admin)
    scoped = await SyncClient.connect(f"{ws_url}?token={tokens.issue('read', [own['id']])}")
    everything = await SyncClient.connect(f"{ws_url}?token={tokens.issue('read', '*')}")
    anonymous = await SyncClient.connect(ws_url)  # not authenticated yet: hears nothing
    _, body = await api(http_server_client, "POST", "/api/departments", {"name": "새팀"}, headers=admin)
    assert (await everything.receive())["event"] == "department_created"
    await api(http_server_client, "PUT", f"/api/departments/{other['id']}", {"description": "x"}, headers=admin)
    assert (await everything.receive())["event"] == "department_updated"
    await api(http_server_client, "PUT", f"/api/departments/{own['id']}", {"description": "y"}, headers=admin)
    assert (await scoped.receive())["data"]["id"] == own["id"]
    assert (await everything.receive())["data"]["id"] == own["id"]
    await api(http_server_client, "DELETE", f"/api/departments/{other['id']}", headers=admin)
    assert (await everything.receive())["event"] == "department_deleted"
    await scoped.expect_nothing()
    reply = await anonymous.request("ping", {}, "p")
    assert reply["event"] == "pong"  # nothing was pushed before it
    for client in (scoped, everything, anonymous):
        client.close()


@pytest.mark.parametrize("role", ["read", "write", "admin"])
@pytest.mark.parametrize("scope", ["own", "*"])
async def test_role_by_department_by_action_over_the_websocket(http_server_client, ws_url, tokens, admin, role,
                                                               scope):
    own, other = await setup_two_departments(http_server_client, admin)
    token = tokens.issue(role, [own["id"]] if scope == "own" else "*", subject=f"{role}-{scope}")
    client = await SyncClient.connect(f"{ws_url}?token={token}")
    try:
        for target, department in (("own", own), ("other", other)):
            for action in WS_ACTIONS:
                reply = await client.request(action, {"department_id": department["id"]}, action)
                expected = allowed(role, scope, target, action)
                answer = "joined_department" if action == "join_department" else "sync_response"
                assert reply["event"] == (answer if expected else "error"), (role, scope, target, action, reply)
                if not expected:
                    assert reply["data"]["code"] == "forbidden" and reply["id"] == action
            reply = await client.request("leave_department", {"department_id": department["id"]}, "leave")
            assert reply["event"] == "left_department"  # leaving is always harmless
        assert (await client.request("ping", {}, "still"))["event"] == "pong"  # refusals keep the connection
    finally:
        client.close()


async def test_a_subject_with_control_characters_cannot_forge_log_lines(http_server_client, tokens, caplog):
    token = tokens.issue("admin", subject="mallory\n2026-12-02 00:00:00 INFO calsync.access: GET / 200\x1b[2J")
    with caplog.at_level("INFO", logger="calsync.access"):
        status, _ = await api(http_server_client, "GET", "/api/departments", headers=bearer(token))
    assert status == 200
    lines = [record.getMessage() for record in caplog.records if record.name == "calsync.access"]
    assert lines and all("\n" not in line and "\x1b" not in line for line in lines)
    assert any("mallory\\x0a2026-12-02" in line for line in lines)


async def test_sockets_without_a_token_count_against_pending_auth_not_max_connections(http_server_client, ws_url,
                                                                                    app, tokens):
    """Contract 13: handshakes without a valid token take `limits.pending_auth` places (two
    here); they cannot crowd out clients that bring a token."""
    app.settings["context"].limits = LimitsConfig(pending_auth=2, max_connections=2)
    waiting = [await tornado.websocket.websocket_connect(ws_url) for _ in range(2)]
    try:
        with pytest.raises(tornado.httpclient.HTTPClientError) as refused:
            await tornado.websocket.websocket_connect(ws_url)
        assert refused.value.code == 503
        users = [await SyncClient.connect(ws_url + "?token=" + tokens.issue("read", subject=f"u{i}")) for i in range(2)]
        with pytest.raises(tornado.httpclient.HTTPClientError) as full:
            await SyncClient.connect(ws_url + "?token=" + tokens.issue("read", subject="u3"))
        assert full.value.code == 503  # max_connections counts the two users only
        await waiting[0].write_message(json.dumps({"event": "auth", "data": {"token": tokens.issue("read")}}))
        while json.loads(await waiting[0].read_message())["event"] != "authenticated":
            pass
        third = await tornado.websocket.websocket_connect(ws_url)  # a pending place came free
        third.close()
        for user in users:
            user.close()
    finally:
        for socket in waiting:
            socket.close()
