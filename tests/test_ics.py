"""The iCalendar feed (contract 10): clock-time readings, and the feed parsed back with
`icalendar`, every field round-tripping, over real HTTP."""
from __future__ import annotations

from datetime import date, datetime, time, timedelta, timezone
from zoneinfo import ZoneInfo

import icalendar
import pytest

from calsync.app import make_app
from calsync.server.access import Tokens
from calsync.server.clocktime import ClockTime, read_clock_time
from calsync.server.config import IcsConfig, ServerConfig
from tests.client import api

SEOUL = ZoneInfo("Asia/Seoul")


@pytest.mark.parametrize("text, reading", [
    # the contract's examples
    ("14:00", ClockTime(time(14))),
    ("2:00 PM", ClockTime(time(14))),
    ("2 pm", ClockTime(time(14))),
    ("오후 2:00", ClockTime(time(14))),
    ("오후 2시", ClockTime(time(14))),
    ("오전 9시 30분", ClockTime(time(9, 30))),
    ("14:00-15:30", ClockTime(time(14), time(15, 30))),
    ("오후 2시 ~ 오후 3시", ClockTime(time(14), time(15))),
    # and their neighbours
    ("2 p.m.", ClockTime(time(14))),
    ("9:05am", ClockTime(time(9, 5))),
    ("12 am", ClockTime(time(0))),
    ("12 PM", ClockTime(time(12))),
    ("오전 12시", ClockTime(time(0))),
    ("오후 12시 30분", ClockTime(time(12, 30))),
    ("오후 2시 반", ClockTime(time(14, 30))),
    ("14시", ClockTime(time(14))),
    ("  09:00  ", ClockTime(time(9))),
    ("오후 2시 ~ 3시", ClockTime(time(14), time(15))),
    ("오후 2시부터 4시까지", ClockTime(time(14), time(16))),
    ("2pm to 3:30pm", ClockTime(time(14), time(15, 30))),
    ("9:00~18:00", ClockTime(time(9), time(18))),
    ("10:00 – 11:00", ClockTime(time(10), time(11))),
    # no clock time: all-day
    ("", None), ("종일", None), ("점심 이후", None), ("TBD", None), ("3", None), ("25:00", None),
    ("13 pm", None), ("오후 0시", None), ("1:60", None), ("15:00-14:00", None), ("오후 2 pm", None),
    ("14:00-", None), ("2024-01-20", None), ("오후 3시 ~ 2시", None),
])
def test_time_readings(text, reading):
    assert read_clock_time(text) == reading


@pytest.fixture
def backend() -> str:
    return "sqlite"


@pytest.fixture
def app(storage, hub, backend):
    return make_app(storage, hub, ServerConfig(timezone="Asia/Seoul"), backend, ics=IcsConfig(default_minutes=45))


def parse(body: bytes) -> icalendar.Calendar:
    return icalendar.Calendar.from_ical(body)


async def feed(client, department_id: str, headers: dict | None = None, query: str = ""):
    response = await client.fetch(f"/api/departments/{department_id}/events.ics{query}", headers=headers,
                                  raise_error=False)
    return response


async def test_every_field_round_trips(http_server_client):
    client = http_server_client
    _, body = await api(client, "POST", "/api/departments", {"name": "개발팀", "description": "백엔드"})
    department = body["department"]
    path = f"/api/events/{department['id']}"
    made = {}
    for title, day, when in [("스프린트 회의", "2024-01-20", "오후 2시 ~ 오후 3시"), ("점심", "2024-01-21", "12:30"),
                             ("워크숍", "2024-02-29", "종일"), ("릴리스", "2024-03-01", "")]:
        _, body = await api(client, "POST", path, {"event_date": day, "title": title, "time": when,
                                                   "description": f"{title} 설명\n두 번째 줄; 쉼표, 포함",
                                                   "url": "https://example.com/회의?a=1&b=2"})
        made[title] = body["event"]
    _, body = await api(client, "PUT", f"/api/events/{made['점심']['id']}", {"title": "팀 점심"})
    made["점심"] = body["event"]

    response = await feed(client, department["id"])
    assert response.code == 200 and response.headers["Content-Type"] == "text/calendar; charset=utf-8"
    calendar = parse(response.body)
    assert str(calendar["X-WR-CALNAME"]) == "개발팀" and str(calendar["VERSION"]) == "2.0"
    assert [str(tz["TZID"]) for tz in calendar.walk("VTIMEZONE")] == ["Asia/Seoul"]
    vevents = {str(v["UID"]): v for v in calendar.walk("VEVENT")}
    assert set(vevents) == {f"{e['id']}@calsync" for e in made.values()}
    for event in made.values():
        vevent = vevents[f"{event['id']}@calsync"]
        assert str(vevent["SUMMARY"]) == event["title"]
        assert str(vevent["DESCRIPTION"]) == event["description"]
        assert str(vevent["URL"]) == event["url"]
        assert vevent["SEQUENCE"] == event["version"] - 1
        modified = datetime.fromisoformat(event["last_modified"].replace("Z", "+00:00")).replace(microsecond=0)
        assert vevent.decoded("LAST-MODIFIED") == modified and vevent.decoded("DTSTAMP") == modified
    meeting = vevents[f"{made['스프린트 회의']['id']}@calsync"]
    assert meeting.decoded("DTSTART") == datetime(2024, 1, 20, 14, tzinfo=SEOUL)
    assert meeting.decoded("DTEND") == datetime(2024, 1, 20, 15, tzinfo=SEOUL)
    assert meeting.decoded("DTSTART").astimezone(timezone.utc).hour == 5
    lunch = vevents[f"{made['점심']['id']}@calsync"]
    assert str(lunch["SUMMARY"]) == "팀 점심" and lunch["SEQUENCE"] == 1
    assert lunch.decoded("DTEND") - lunch.decoded("DTSTART") == timedelta(minutes=45)  # ics.default_minutes
    workshop = vevents[f"{made['워크숍']['id']}@calsync"]
    assert (workshop.decoded("DTSTART"), workshop.decoded("DTEND")) == (date(2024, 2, 29), date(2024, 3, 1))
    assert str(workshop["COMMENT"]) == "종일"  # the words kept for people
    release = vevents[f"{made['릴리스']['id']}@calsync"]
    assert release.decoded("DTSTART") == date(2024, 3, 1) and "COMMENT" not in release


async def test_etag_304_and_changes(http_server_client):
    client = http_server_client
    _, body = await api(client, "POST", "/api/departments", {"name": "개발팀"})
    department = body["department"]
    first = await feed(client, department["id"])
    etag = first.headers["ETag"]
    again = await feed(client, department["id"], {"If-None-Match": etag})
    assert again.code == 304 and not again.body and again.headers["ETag"] == etag
    await api(client, "POST", f"/api/events/{department['id']}", {"event_date": "2024-01-20", "title": "회의"})
    changed = await feed(client, department["id"], {"If-None-Match": etag})
    assert changed.code == 200 and changed.headers["ETag"] != etag
    assert len(parse(changed.body).walk("VEVENT")) == 1
    await api(client, "PUT", f"/api/departments/{department['id']}", {"name": "새 이름"})
    renamed = await feed(client, department["id"], {"If-None-Match": changed.headers["ETag"]})
    assert renamed.code == 200 and str(parse(renamed.body)["X-WR-CALNAME"]) == "새 이름"
    missing = await feed(client, "no-such-department")
    assert missing.code == 404 and b'"not_found"' in missing.body


class TestWithAuth:
    SECRET = "an-ics-secret-of-at-least-32-characters-long"

    @pytest.fixture
    def app(self, storage, hub, backend):
        return make_app(storage, hub, ServerConfig(), backend, tokens=Tokens(self.SECRET))

    async def test_token_in_the_url_or_the_header(self, http_server_client):
        tokens = Tokens(self.SECRET)
        admin = {"Authorization": f"Bearer {tokens.issue('admin')}"}
        _, body = await api(http_server_client, "POST", "/api/departments", {"name": "개발팀"}, headers=admin)
        own = body["department"]["id"]
        _, body = await api(http_server_client, "POST", "/api/departments", {"name": "영업팀"}, headers=admin)
        other = body["department"]["id"]
        reader = tokens.issue("read", [own], subject="kim")
        assert (await feed(http_server_client, own, query=f"?token={reader}")).code == 200
        assert (await feed(http_server_client, own, {"Authorization": f"Bearer {reader}"})).code == 200
        assert (await feed(http_server_client, own)).code == 401
        assert (await feed(http_server_client, own, query="?token=forged")).code == 401
        assert (await feed(http_server_client, other, query=f"?token={reader}")).code == 403
        # REST elsewhere still takes the header only
        assert (await api(http_server_client, "GET", f"/api/events/{own}?token={reader}"))[0] == 401


async def test_events_from_year_1_to_year_9999_are_served(http_server_client):
    """Contract 13: no stored record makes the feed answer 500."""
    client = http_server_client
    _, body = await api(client, "POST", "/api/departments", {"name": "끝과 끝"})
    department = body["department"]["id"]
    for day, when in [("0001-01-01", ""), ("0001-01-01", "오전 9시"), ("9999-12-31", ""), ("9999-12-31", "오후 11시"),
                      ("9999-12-31", "오후 11시 ~ 11시 30분")]:
        status, body = await api(client, "POST", f"/api/events/{department}", {"event_date": day, "title": "끝",
                                                                              "time": when})
        assert status == 201, body
    response = await feed(client, department)
    assert response.code == 200
    starts = sorted(str(v.decoded("DTSTART"))[:10] for v in parse(response.body).walk("VEVENT"))
    assert starts == ["0001-01-01"] * 2 + ["9999-12-31"] * 3


async def test_calendar_name_and_description_are_escaped(http_server_client):
    client = http_server_client
    _, body = await api(client, "POST", "/api/departments", {"name": "영업, 지원; 팀\\A", "description": "쉼표, 세미콜론;"})
    response = await feed(client, body["department"]["id"])
    lines = response.body.decode().splitlines()
    assert "X-WR-CALNAME:영업\\, 지원\\; 팀\\\\A" in lines
    assert "X-WR-CALDESC:쉼표\\, 세미콜론\\;" in lines


@pytest.mark.parametrize("text", ["널\x00문자", "이스케이프\x1b[31m", "캐리지\r리턴", "벨\x07"])
async def test_text_fields_refuse_control_characters(http_server_client, text):
    client = http_server_client
    _, body = await api(client, "POST", "/api/departments", {"name": "제어 문자"})
    department = body["department"]["id"]
    status, answer = await api(client, "POST", f"/api/events/{department}", {"event_date": "2026-12-02", "title": text})
    assert (status, answer["code"]) == (400, "validation_error") and "title" in answer["errors"]
    status, answer = await api(client, "POST", "/api/departments", {"name": text})
    assert status == 400
    status, created = await api(client, "POST", f"/api/events/{department}",
                                {"event_date": "2026-12-02", "title": "탭\t과", "description": "줄\n바꿈"})
    assert status == 201  # tab and newline are text
    status, answer = await api(client, "PUT", f"/api/events/{created['event']['id']}", {"description": text})
    assert status == 400
