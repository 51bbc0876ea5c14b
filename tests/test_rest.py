"""REST over a real HTTP server, every row of contract section 2, on every backend."""
from __future__ import annotations

import json

import pytest

from calsync.server.config import ServerConfig
from tests.client import DEPARTMENT_FIELDS, EVENT_FIELDS, MEETING, api, api_full, make_department, make_event

pytestmark = pytest.mark.usefixtures("http_server")

async def test_root_health_ready(http_server_client, backend):
    status, body = await api(http_server_client, "GET", "/")
    assert status == 200 and body["success"] is True and body["status"] == "running"
    assert body["storage"] == backend and body["version"] and body["message"]
    assert await api(http_server_client, "GET", "/health") == (200, {"success": True, "status": "ok"})
    status, body = await api(http_server_client, "GET", "/ready")
    assert status == 200 and body["success"] is True


async def test_create_list_get_delete_department(http_server_client):
    department = await make_department(http_server_client, "  개발팀  ")
    assert set(department) == DEPARTMENT_FIELDS
    assert department["name"] == "개발팀" and department["description"] == "소프트웨어 개발"
    assert department["created_at"].endswith("Z") and len(department["created_at"]) == 24

    status, body = await api(http_server_client, "GET", "/api/departments")
    assert status == 200 and body == {"success": True, "departments": [department]}
    status, body = await api(http_server_client, "GET", f"/api/departments/{department['id']}")
    assert status == 200 and body == {"success": True, "department": department}

    status, body = await api(http_server_client, "DELETE", f"/api/departments/{department['id']}")
    assert (status, body) == (200, {"success": True, "message": "부서가 삭제되었습니다."})
    status, body = await api(http_server_client, "GET", f"/api/departments/{department['id']}")
    assert (status, body) == (404, {"success": False, "message": "부서를 찾을 수 없습니다.", "code": "not_found"})
    status, body = await api(http_server_client, "DELETE", f"/api/departments/{department['id']}")
    assert (status, body["code"], body["message"]) == (404, "not_found", "부서를 찾을 수 없습니다.")


async def test_departments_sorted_by_name(http_server_client):
    for name in ["마케팅팀", "개발팀", "인사팀"]:
        await make_department(http_server_client, name)
    _, body = await api(http_server_client, "GET", "/api/departments")
    assert [d["name"] for d in body["departments"]] == ["개발팀", "마케팅팀", "인사팀"]


@pytest.mark.parametrize("payload", [{}, {"name": ""}, {"name": "   "}, {"description": "x"}, {"name": None}])
async def test_department_name_required(http_server_client, payload):
    status, body = await api(http_server_client, "POST", "/api/departments", payload)
    assert status == 400 and body["success"] is False
    assert (body["message"], body["code"]) == ("부서 이름은 필수입니다.", "validation_error")
    assert "name" in body["errors"]


@pytest.mark.parametrize("payload, field", [({"name": "x" * 101}, "name"), ({"name": 7}, "name"),
                                            ({"name": "a", "description": "x" * 1001}, "description")])
async def test_department_validation(http_server_client, payload, field):
    status, body = await api(http_server_client, "POST", "/api/departments", payload)
    assert (status, body["code"]) == (400, "validation_error") and field in body["errors"]


async def test_department_name_conflict(http_server_client):
    await make_department(http_server_client, "개발팀")
    status, body = await api(http_server_client, "POST", "/api/departments", {"name": " 개발팀"})
    assert (status, body) == (409, {"success": False, "message": "이미 존재하는 부서 이름입니다.", "code": "conflict"})


async def test_server_owned_and_unknown_fields_ignored(http_server_client):
    status, body = await api(http_server_client, "POST", "/api/departments",
                             {"name": "개발팀", "id": "mine", "created_at": "1999", "colour": "red"})
    assert status == 201 and body["department"]["id"] != "mine" and body["department"]["created_at"] != "1999"
    assert "colour" not in body["department"]
    department_id = body["department"]["id"]
    event = await make_event(http_server_client, department_id, id="mine", department_id="other", version=99)
    assert event["id"] != "mine" and event["department_id"] == department_id and event["version"] == 1


async def test_event_lifecycle(http_server_client):
    department = await make_department(http_server_client)
    event = await make_event(http_server_client, department["id"])
    assert set(event) == EVENT_FIELDS
    assert {k: event[k] for k in MEETING} == MEETING
    assert event["version"] == 1 and event["created_at"] == event["last_modified"]

    status, body = await api(http_server_client, "GET", f"/api/events/{department['id']}")
    assert (status, body) == (200, {"success": True, "events": [event], "deleted": [], "seq": 1,
                                    "epoch": department["epoch"], "reset": True, "more": False})

    status, body = await api(http_server_client, "PUT", f"/api/events/{event['id']}",
                             {"title": "수정된 제목", "time": "오후 3:00"})
    assert status == 200 and body["success"] is True
    updated = body["event"]
    assert (updated["title"], updated["time"], updated["description"]) == ("수정된 제목", "오후 3:00", "주간 팀 회의")
    assert updated["version"] == 2 and updated["last_modified"] >= event["last_modified"]

    status, body = await api(http_server_client, "DELETE", f"/api/events/{event['id']}")
    assert (status, body) == (200, {"success": True, "message": "이벤트가 삭제되었습니다."})
    _, body = await api(http_server_client, "GET", f"/api/events/{department['id']}")
    assert body["events"] == []


async def test_event_not_found(http_server_client):
    expected = {"success": False, "message": "이벤트를 찾을 수 없습니다.", "code": "not_found"}
    assert await api(http_server_client, "PUT", "/api/events/nope", {"title": "x"}) == (404, expected)
    assert await api(http_server_client, "DELETE", "/api/events/nope") == (404, expected)


@pytest.mark.parametrize("method, path", [("GET", "/api/departments/{}"), ("DELETE", "/api/departments/{}"),
                                          ("GET", "/api/events/{}"), ("POST", "/api/events/{}"),
                                          ("PUT", "/api/events/{}"), ("DELETE", "/api/events/{}")])
async def test_ids_no_store_could_hold_are_not_found(http_server_client, method, path):
    status, body = await api(http_server_client, method, path.format("가" * 3000), MEETING)
    assert (status, body["code"]) == (404, "not_found")


async def test_events_of_unknown_department(http_server_client):
    expected = {"success": False, "message": "부서를 찾을 수 없습니다.", "code": "not_found"}
    assert await api(http_server_client, "GET", "/api/events/nope") == (404, expected)
    assert await api(http_server_client, "POST", "/api/events/nope", MEETING) == (404, expected)


@pytest.mark.parametrize("payload", [{"title": "회의"}, {"event_date": "2024-01-20"}, {"event_date": "", "title": "x"},
                                     {"event_date": "2024-01-20", "title": "  "}, {}])
async def test_event_date_and_title_required(http_server_client, payload):
    department = await make_department(http_server_client)
    status, body = await api(http_server_client, "POST", f"/api/events/{department['id']}", payload)
    assert (status, body["message"], body["code"]) == (400, "날짜와 제목은 필수입니다.", "validation_error")


@pytest.mark.parametrize("fields, field", [
    ({"event_date": "2024-02-30"}, "event_date"), ({"event_date": "20240120"}, "event_date"),
    ({"event_date": "2024-1-2"}, "event_date"), ({"title": "x" * 201}, "title"),
    ({"description": "x" * 5001}, "description"), ({"time": "x" * 51}, "time"),
    ({"url": "ftp://example.com"}, "url"), ({"url": "example.com"}, "url"), ({"url": "http://"}, "url"),
    ({"url": "http:///path"}, "url"), ({"url": "http://x y"}, "url"), ({"title": "회의\x1b"}, "title"),
    ({"url": "https://example.com/" + "x" * 2048}, "url"), ({"title": ["a"]}, "title"),
])
async def test_event_validation(http_server_client, fields, field):
    department = await make_department(http_server_client)
    status, body = await api(http_server_client, "POST", f"/api/events/{department['id']}", {**MEETING, **fields})
    assert (status, body["code"], body["success"]) == (400, "validation_error", False)
    assert field in body["errors"], body


@pytest.mark.parametrize("url", ["http://[", "https://[::1]:8080/a", " https://example.com/x?y=1#z ", "HTTP://예시.한국/"])
async def test_urls_the_document_allows_are_accepted(http_server_client, url):
    """The url rule is one pattern, the server's and the OpenAPI document's ("http://[" once
    made Python's urlsplit raise: a 500, found by schemathesis)."""
    department = await make_department(http_server_client)
    status, body = await api(http_server_client, "POST", f"/api/events/{department['id']}", {**MEETING, "url": url})
    assert status == 201 and body["event"]["url"] == url.strip()


async def test_event_optional_fields_default_empty(http_server_client):
    department = await make_department(http_server_client)
    event = await make_event(http_server_client, department["id"], description=None, time=None, url=None)
    assert (event["description"], event["time"], event["url"]) == ("", "", "")
    minimal = {"event_date": "2024-02-29", "title": "윤년"}
    status, body = await api(http_server_client, "POST", f"/api/events/{department['id']}", minimal)
    assert status == 201 and body["event"]["url"] == ""


async def test_update_validates_given_fields(http_server_client):
    department = await make_department(http_server_client)
    event = await make_event(http_server_client, department["id"])
    for bad in ({"title": ""}, {"event_date": "2024-13-01"}, {"url": "nope"}, {}, {"id": "x"}):
        status, body = await api(http_server_client, "PUT", f"/api/events/{event['id']}", bad)
        assert (status, body["code"]) == (400, "validation_error"), (bad, body)
    status, body = await api(http_server_client, "PUT", f"/api/events/{event['id']}", {"url": ""})
    assert status == 200 and body["event"]["url"] == "" and body["event"]["version"] == 2


async def test_events_sorted_and_filtered(http_server_client):
    department = await make_department(http_server_client)
    for date, time in [("2024-01-21", "09:00"), ("2024-01-20", "오후 2:00"), ("2024-01-20", "14:00"),
                       ("2024-01-05", "")]:
        await make_event(http_server_client, department["id"], event_date=date, time=time)
    _, body = await api(http_server_client, "GET", f"/api/events/{department['id']}")
    assert [(e["event_date"], e["time"]) for e in body["events"]] == [
        ("2024-01-05", ""), ("2024-01-20", "14:00"), ("2024-01-20", "오후 2:00"), ("2024-01-21", "09:00")]
    _, body = await api(http_server_client, "GET", f"/api/events/{department['id']}?from=2024-01-20&to=2024-01-20")
    assert [e["time"] for e in body["events"]] == ["14:00", "오후 2:00"]
    _, body = await api(http_server_client, "GET", f"/api/events/{department['id']}?from=2024-01-21")
    assert len(body["events"]) == 1


@pytest.mark.parametrize("query", ["from=2024-13-01", "to=yesterday", "from=2024-02-01&to=2024-01-01"])
async def test_bad_date_range(http_server_client, query):
    department = await make_department(http_server_client)
    status, body = await api(http_server_client, "GET", f"/api/events/{department['id']}?{query}")
    assert (status, body["code"]) == (400, "validation_error")


async def test_cascade_delete_over_rest(http_server_client):
    department = await make_department(http_server_client)
    event = await make_event(http_server_client, department["id"])
    await api(http_server_client, "DELETE", f"/api/departments/{department['id']}")
    status, _ = await api(http_server_client, "PUT", f"/api/events/{event['id']}", {"title": "x"})
    assert status == 404


@pytest.mark.parametrize("raw", [b"", b"not json", b"[1, 2]", b'"text"', b"null", b"42", b"\xff\xfe"])
async def test_invalid_json(http_server_client, raw):
    status, body = await api(http_server_client, "POST", "/api/departments", raw=raw)
    assert (status, body["success"], body["code"]) == (400, False, "invalid_json")
    assert body["message"]


async def test_invalid_json_on_event_routes(http_server_client):
    department = await make_department(http_server_client)
    event = await make_event(http_server_client, department["id"])
    for method, path in (("POST", f"/api/events/{department['id']}"), ("PUT", f"/api/events/{event['id']}")):
        status, body = await api(http_server_client, method, path, raw=b"[]")
        assert (status, body["code"]) == (400, "invalid_json")


async def test_body_too_large(http_server_client, server_config):
    big = json.dumps({"name": "x", "description": "y" * server_config.max_body_bytes}).encode()
    status, body = await api(http_server_client, "POST", "/api/departments", raw=big)
    assert (status, body["success"], body["code"]) == (413, False, "too_large")
    _, body = await api(http_server_client, "GET", "/api/departments")
    assert body["departments"] == []


async def test_unknown_path_and_method(http_server_client):
    status, body = await api(http_server_client, "GET", "/no/such/path")
    assert (status, body["code"], body["success"]) == (404, "not_found", False)
    status, body = await api(http_server_client, "POST", "/api/departments/x/y", {})
    assert (status, body["code"]) == (404, "not_found")
    for method, path in (("PATCH", "/api/departments"), ("PUT", "/api/departments"), ("POST", "/health"),
                         ("DELETE", "/api/departments"), ("PATCH", "/api/events/x")):
        status, body = await api(http_server_client, method, path, {})
        assert (status, body["code"], body["success"]) == (405, "method_not_allowed", False), (method, path)


@pytest.mark.parametrize("method, path, allow", [
    ("DELETE", "/api/departments", "GET, POST, HEAD, OPTIONS"),
    ("POST", "/health", "GET, HEAD, OPTIONS"),
    ("PATCH", "/api/events/x", "GET, POST, PUT, DELETE, HEAD, OPTIONS"),
    ("PUT", "/api/departments/x/events.ics", "GET, HEAD, OPTIONS"),
])
async def test_every_405_says_what_is_allowed(http_server_client, method, path, allow):
    status, _, headers = await api_full(http_server_client, method, path, {})
    assert status == 405 and headers["Allow"] == allow


async def test_head_works_wherever_get_does(http_server_client):
    department = await make_department(http_server_client)
    for path in ("/", "/health", "/ready", "/api/departments", f"/api/departments/{department['id']}",
                 f"/api/events/{department['id']}", f"/api/departments/{department['id']}/events.ics", "/metrics",
                 "/api/openapi.json"):
        get = await http_server_client.fetch(path, raise_error=False)
        head = await http_server_client.fetch(path, method="HEAD", raise_error=False)
        assert (head.code, head.body) == (get.code, b""), path
        assert head.headers.get("Content-Type") == get.headers.get("Content-Type"), path


async def test_korean_is_not_escaped(http_server_client):
    response = await http_server_client.fetch("/api/departments", method="POST",
                                              body=json.dumps({"name": "개발팀"}).encode(), raise_error=False)
    assert "개발팀".encode("utf-8") in response.body and b"\\u" not in response.body
    assert response.headers["Content-Type"] == "application/json; charset=UTF-8"


async def test_cors_for_allowed_origin_only(http_server_client, app):
    app.settings["context"].allowed_origins = ("https://calendar.example",)
    response = await http_server_client.fetch("/api/departments", headers={"Origin": "https://calendar.example"})
    assert response.headers["Access-Control-Allow-Origin"] == "https://calendar.example"
    response = await http_server_client.fetch("/api/departments", headers={"Origin": "https://evil.example"})
    assert "Access-Control-Allow-Origin" not in response.headers
    response = await http_server_client.fetch("/api/departments", method="OPTIONS",
                                              headers={"Origin": "https://calendar.example"})
    assert response.code == 204 and "PUT" in response.headers["Access-Control-Allow-Methods"]


async def test_preflight_allows_the_sync_headers_for_allowed_origins_and_refuses_others(http_server_client, app):
    app.settings["context"].allowed_origins = ("https://calendar.example",)
    department = await make_department(http_server_client)
    for path in ("/api/departments", f"/api/events/{department['id']}", f"/api/departments/{department['id']}"):
        response = await http_server_client.fetch(path, method="OPTIONS", headers={
            "Origin": "https://calendar.example", "Access-Control-Request-Method": "PUT",
            "Access-Control-Request-Headers": "authorization, if-match, idempotency-key"})
        assert response.code == 204 and response.headers["Access-Control-Allow-Origin"] == "https://calendar.example"
        allowed = {h.strip().lower() for h in response.headers["Access-Control-Allow-Headers"].split(",")}
        assert allowed >= {"authorization", "content-type", "if-match", "if-none-match", "idempotency-key"}
        status, body = await api(http_server_client, "OPTIONS", path, headers={"Origin": "https://evil.example"})
        assert (status, body["code"], body["message"]) == (403, "forbidden", "권한이 없습니다.")
    # an allowed page can read the headers it needs
    response = await http_server_client.fetch(f"/api/events/{department['id']}", method="POST",
                                              body=json.dumps(MEETING), headers={"Origin": "https://calendar.example"})
    exposed = {h.strip() for h in response.headers["Access-Control-Expose-Headers"].split(",")}
    assert exposed >= {"ETag", "Idempotent-Replayed"}


async def test_pages_of_other_sites_cannot_write(http_server_client, base_url):
    """Contract 13: a write whose Origin is neither listed nor our own is refused; reads and
    clients that send no Origin (curl, desktop apps) are unaffected."""
    own = base_url.rstrip("/")
    evil = {"Origin": "https://evil.example"}
    status, body = await api(http_server_client, "POST", "/api/departments", {"name": "악성"}, headers=evil)
    assert (status, body["code"]) == (403, "forbidden")
    assert (await api(http_server_client, "GET", "/api/departments", headers=evil))[0] == 200
    status, body = await api(http_server_client, "POST", "/api/departments", {"name": "우리"}, headers={"Origin": own})
    assert status == 201
    department = body["department"]["id"]
    for method, path, payload in (("PUT", f"/api/departments/{department}", {"name": "바꿈"}),
                                  ("DELETE", f"/api/departments/{department}", None)):
        status, body = await api(http_server_client, method, path, payload, headers=evil)
        assert (status, body["code"]) == (403, "forbidden"), method
    assert (await api(http_server_client, "POST", "/api/departments", {"name": "curl"}))[0] == 201


async def test_other_host_names_are_refused_on_a_loopback_server(http_server_client, base_url):
    """Contract 13: DNS rebinding. The test server listens on 127.0.0.1 (default allowed_hosts)."""
    port = base_url.rstrip("/").rsplit(":", 1)[1]
    for host, expected in ((f"attacker.example:{port}", 400), ("attacker.example", 400), (f"localhost:{port}", 200),
                           (f"127.0.0.1:{port}", 200), (f"[::1]:{port}", 200), (f"LOCALHOST:{port}", 200)):
        status, body = await api(http_server_client, "GET", "/api/departments", headers={"Host": host})
        assert status == expected, host
        if expected == 400:
            assert body["code"] == "validation_error"


def test_allowed_hosts_default_follows_the_listen_address():
    assert ServerConfig(host="127.0.0.1").hosts() == {"localhost", "127.0.0.1", "[::1]"}
    assert ServerConfig(host="0.0.0.0").hosts() is None
    assert ServerConfig(host="127.0.0.1", allowed_hosts=("*",)).hosts() is None
    assert ServerConfig(host="0.0.0.0", allowed_hosts=("Cal.Example",)).hosts() == {"cal.example"}
