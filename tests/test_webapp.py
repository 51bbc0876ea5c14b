"""The web calendar at /app/ in a real headless Chromium (Debian's package, driven by
Playwright), against `calsync serve` as a real process.

Two pages on one department see each other's creates, edits and deletes without reload; a
412 shows the person the choice to reload or overwrite; a server restart with a change
made meanwhile is caught up by both pages; a read-only token sees the month and gets no
working edit controls. Screenshots go to tests/artifacts/.
"""
from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

from calsync.server.access import Tokens
from calsync.storage.sqlite import SqliteOptions, SqliteStorage
from tests.process import ServerProcess, write_config
from tests.tools import node_tool, require

CHROMIUM = os.environ.get("CALSYNC_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
# As root in a container, with nothing reachable beyond loopback (see README: Development).
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage"]
ARTIFACTS = Path(__file__).parent / "artifacts"
SECRET = "a-web-calendar-secret-of-32-characters-or-more"
WAIT_MS = 15_000
expect.set_options(timeout=WAIT_MS)  # a busy CI machine: no assertion waits less


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def post(url: str, body: dict, token: str | None = None) -> dict:
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(url, json.dumps(body).encode(), headers, method="POST")
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


@pytest.fixture(scope="module")
def browser():
    require(CHROMIUM, "apt-get install chromium, or set CALSYNC_CHROMIUM")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


DESKTOP = {"width": 1280, "height": 860}
PHONE = {"width": 390, "height": 844}


def open_page(browser: Browser, url: str, locale: str = "ko-KR", viewport: dict = DESKTOP, axe: bool = False) -> Page:
    """A page of its own (own storage, so no token is shared); `axe`: the page's CSP lets the
    test add axe-core's script, which it would refuse like any script not its own."""
    context = browser.new_context(locale=locale, viewport=viewport, bypass_csp=axe)
    page = context.new_page()
    page.on("dialog", lambda dialog: dialog.accept())  # "delete this event?"
    page.goto(url)
    expect(page.locator("#connection")).to_have_attribute("data-state", "online", timeout=WAIT_MS)
    return page


def day(page: Page, date: str):
    return page.locator(f'td[data-date="{date}"]')


def test_two_pages_stay_in_step_through_edits_conflicts_and_a_restart(browser, tmp_path):
    ARTIFACTS.mkdir(exist_ok=True)
    port = free_port()
    config = write_config(tmp_path, "storage:\n  backend: sqlite\n")
    server = ServerProcess(config, "--port", str(port))
    try:
        department = post(server.url + "/api/departments", {"name": "개발팀"})["department"]
        post(server.url + f"/api/events/{department['id']}", {"event_date": "2024-01-08", "title": "주간 회의",
                                                              "time": "오전 10시"})
        link = f"{server.url}/app/?department={department['id']}&month=2024-01"
        first, second = open_page(browser, link), open_page(browser, link)
        for page in (first, second):
            expect(page.locator("#month-label")).to_have_text("2024년 1월")
            expect(day(page, "2024-01-08")).to_contain_text("주간 회의")  # the title as text in its day cell

        # create in the first, seen in the second
        day(first, "2024-01-20").locator(".day").click()
        first.fill("#event-title", "스프린트 회의")
        first.fill("#event-time", "오후 2시 ~ 오후 3시")
        first.fill("#event-description", "회고 포함")
        first.click("#save")
        expect(day(second, "2024-01-20")).to_contain_text("스프린트 회의", timeout=WAIT_MS)
        first.screenshot(path=str(ARTIFACTS / "calendar-month.png"))

        # edit in the second, seen in the first
        day(second, "2024-01-20").locator(".event").click()
        expect(second.locator("#event-title")).to_have_value("스프린트 회의")
        second.fill("#event-title", "스프린트 회고")
        second.click("#save")
        expect(day(first, "2024-01-20")).to_contain_text("스프린트 회고", timeout=WAIT_MS)

        # a conflict: the first edits a version the second has already replaced
        day(first, "2024-01-08").locator(".event").click()
        day(second, "2024-01-08").locator(".event").click()
        second.fill("#event-title", "주간 회의 (변경)")
        second.click("#save")
        expect(day(first, "2024-01-08")).to_contain_text("주간 회의 (변경)", timeout=WAIT_MS)
        first.fill("#event-title", "주간 회의 (내 것)")
        first.click("#save")
        expect(first.locator("#conflict")).to_be_visible(timeout=WAIT_MS)
        expect(first.locator("#message")).to_have_text("")  # no "saved" left from before beside it
        first.screenshot(path=str(ARTIFACTS / "calendar-conflict.png"))
        first.click("#conflict-overwrite")
        expect(day(second, "2024-01-08")).to_contain_text("주간 회의 (내 것)", timeout=WAIT_MS)

        # delete in the first, gone from the second
        day(first, "2024-01-20").locator(".event").click()
        first.click("#delete")
        expect(day(second, "2024-01-20").locator(".event")).to_have_count(0, timeout=WAIT_MS)

        # the server goes away; a change is made meanwhile; both pages catch up
        assert server.stop() == 0
        for page in (first, second):
            expect(page.locator("#connection")).not_to_have_attribute("data-state", "online", timeout=WAIT_MS)
        with ThreadPoolExecutor(1) as other_thread:  # Playwright's own loop runs on this one
            other_thread.submit(asyncio.run, store_directly(tmp_path / "data" / "calsync.db", department["id"])).result()
        server = ServerProcess(config, "--port", str(port))
        for page in (first, second):
            expect(day(page, "2024-01-25")).to_contain_text("서버가 꺼진 동안", timeout=WAIT_MS)
            expect(page.locator("#connection")).to_have_attribute("data-state", "online", timeout=WAIT_MS)
            expect(day(page, "2024-01-08")).to_contain_text("주간 회의 (내 것)")
        second.screenshot(path=str(ARTIFACTS / "calendar-after-restart.png"))
    finally:
        server.kill()


async def store_directly(path: Path, department_id: str) -> None:
    """What another writer of the same database did while this server was down."""
    storage = SqliteStorage(SqliteOptions(path=path))
    await storage.open()
    try:
        await storage.create_event(department_id, {"event_date": "2024-01-25", "title": "서버가 꺼진 동안"})
    finally:
        await storage.close()


def test_a_read_only_token_sees_the_month_without_edit_controls(browser, tmp_path):
    ARTIFACTS.mkdir(exist_ok=True)
    config = write_config(tmp_path, f"auth:\n  mode: token\n  secret: {SECRET}\nstorage:\n  backend: sqlite\n")
    server = ServerProcess(config)
    tokens = Tokens(SECRET)
    try:
        admin = tokens.issue("admin", subject="관리자")
        department = post(server.url + "/api/departments", {"name": "영업팀"}, admin)["department"]
        post(server.url + f"/api/events/{department['id']}", {"event_date": "2024-03-04", "title": "고객 미팅"}, admin)
        reader = tokens.issue("read", [department["id"]], subject="kim")
        page = open_page(browser, f"{server.url}/app/?department={department['id']}&month=2024-03&token={reader}",
                         locale="en-US")
        assert "token=" not in page.url  # taken into the browser, out of the address bar
        expect(page.locator("#month-label")).to_have_text("March 2024")
        expect(day(page, "2024-03-04")).to_contain_text("고객 미팅")
        expect(page.locator("#read-only")).to_be_visible(timeout=WAIT_MS)
        expect(page.locator("#event-form")).to_be_hidden()
        day(page, "2024-03-04").locator(".event").click()
        expect(page.locator("#event-form")).to_be_hidden()
        expect(page.locator("#department-admin")).to_be_hidden()  # departments are an admin's
        page.screenshot(path=str(ARTIFACTS / "calendar-read-only.png"))
        # the token is kept: a fresh visit without it still works
        page.goto(f"{server.url}/app/?department={department['id']}&month=2024-03")
        expect(day(page, "2024-03-04")).to_contain_text("고객 미팅", timeout=WAIT_MS)
    finally:
        server.kill()


def test_without_a_token_the_page_asks_for_one(browser, tmp_path):
    config = write_config(tmp_path, f"auth:\n  mode: token\n  secret: {SECRET}\nstorage:\n  backend: memory\n")
    server = ServerProcess(config)
    try:
        context = browser.new_context(locale="ko-KR")
        page = context.new_page()
        page.goto(server.url + "/app/")
        expect(page.locator("#token-panel")).to_be_visible(timeout=WAIT_MS)
        expect(page.get_by_label("토큰")).to_be_visible()
        page.get_by_label("토큰").fill(Tokens(SECRET).issue("admin"))
        page.locator("#token-form button").click()
        expect(page.locator("#connection")).to_have_attribute("data-state", "online", timeout=WAIT_MS)
        expect(page.locator("#token-panel")).to_be_hidden()
    finally:
        server.kill()


@pytest.fixture
def served(tmp_path):
    """`calsync serve` on a memory store with one department: (server, department)."""
    server = ServerProcess(write_config(tmp_path, "storage:\n  backend: memory\n"))
    try:
        yield server, post(server.url + "/api/departments", {"name": "개발팀"})["department"]
    finally:
        server.kill()


def add(server: ServerProcess, department: dict, **event) -> dict:
    return post(server.url + f"/api/events/{department['id']}", event)["event"]


LONG_TITLES = ["2025년 하반기 전사 워크숍 준비 회의 (장소: 본관 3층 대회의실)",
               "Quarterly planning with the design and platform teams, then a retrospective"]


def test_on_a_phone_every_title_is_readable_and_the_form_is_near(browser, served):
    """Issue 18: at 390 px the grid showed one syllable per title. On a phone the grid keeps
    the days (each a target of at least 24 px) and a list of the month shows every event."""
    ARTIFACTS.mkdir(exist_ok=True)
    server, department = served
    add(server, department, event_date="2024-05-07", title=LONG_TITLES[0], time="오후 2시 ~ 오후 4시",
        description="발표 자료는 전날까지", url="https://example.com/agenda")
    add(server, department, event_date="2024-05-07", title=LONG_TITLES[1], time="오전 9시")
    add(server, department, event_date="2024-05-21", title="짧은 일정")
    page = open_page(browser, f"{server.url}/app/?department={department['id']}&month=2024-05", viewport=PHONE)
    agenda = page.locator("#agenda")
    expect(agenda).to_be_visible()
    entries = agenda.locator(".agenda-event button")
    expect(entries).to_have_text([LONG_TITLES[1], LONG_TITLES[0], "짧은 일정"])  # by day, then by clock time
    for index in range(3):
        assert entries.nth(index).evaluate("b => b.scrollWidth <= b.clientWidth && b.getBoundingClientRect().right <= 390")
    expect(agenda.locator("a[href='https://example.com/agenda']")).to_have_attribute("rel", "noopener noreferrer")
    for box in [b.bounding_box() for b in page.locator("#weeks .day").all()]:
        assert box["width"] >= 24 and box["height"] >= 24
    assert page.evaluate("document.documentElement.scrollWidth") <= 390  # nothing wider than the screen
    assert page.locator("#editor").bounding_box()["y"] < 700  # the form right under the month, not 1,000 px down
    page.screenshot(path=str(ARTIFACTS / "calendar-phone.png"), full_page=True)
    entries.nth(0).click()
    expect(page.locator("#event-title")).to_have_value(LONG_TITLES[1])
    expect(page.locator("#event-title")).to_be_focused()


def test_a_days_events_are_in_clock_order(browser, served):
    """Issue 18: "12:00" sorted above "오전 10시 30분" as text. All-day events come first."""
    server, department = served
    for time in ("12:00", "오후 2시", "오전 10시 30분", "종일"):
        add(server, department, event_date="2024-06-03", title=f"일정 {time}", time=time)
    page = open_page(browser, f"{server.url}/app/?department={department['id']}&month=2024-06")
    expect(day(page, "2024-06-03").locator(".event .time")).to_have_text(["종일", "오전 10시 30분", "12:00", "오후 2시"])


CLOCK_TEXTS = ["14:00", "2:00 PM", "2 pm", "2 p.m.", "오후 2:00", "오후 2시", "오전 9시 30분", "오후 2시 반",
               "14:00-15:30", "오후 2시 ~ 오후 3시", "오후 2시 ~ 3시", "2pm to 3:30pm", "오전 11시 부터 오후 1시 까지",
               "12 AM", "12 PM", "0:30", "23:59", "오전 12시", "종일", "점심", "TBD", "25:00", "3", "3시",
               "오후 3시 ~ 오후 2시", "오후 2 pm", "9:60", "", "  10:15  ", "13시", "오후 13시", "1:05 a.m. – 2:10 AM"]


def test_the_page_reads_clock_times_as_the_server_does(browser, served):
    """The page sorts by the clock time the .ics feed reads (calsync.server.clocktime): the
    two readings must agree, text for text."""
    from calsync.server.clocktime import read_clock_time
    server, department = served
    page = open_page(browser, f"{server.url}/app/?department={department['id']}")
    in_page = page.evaluate("texts => texts.map((text) => clockTime(text))", CLOCK_TEXTS)
    for text, read in zip(CLOCK_TEXTS, in_page, strict=True):
        clock = read_clock_time(text)
        expected = None if clock is None else {
            "start": clock.start.hour * 60 + clock.start.minute,
            "end": None if clock.end is None else clock.end.hour * 60 + clock.end.minute}
        assert read == expected, text


SERIOUS = ("serious", "critical")


def axe_violations(page: Page) -> list[str]:
    """axe-core's serious and critical findings, one readable line each (label-in-name, an
    experimental rule, turned on: day buttons were named otherwise than they read)."""
    page.add_script_tag(path=str(node_tool("axe-core/axe.min.js")))
    results = page.evaluate("""async () => await axe.run(document, {
        rules: {"label-content-name-mismatch": {enabled: true}}})""")
    return [f"{v['id']} ({v['impact']}): {v['help']} — {[n['target'] for n in v['nodes']][:5]}"
            for v in results["violations"] if v["impact"] in SERIOUS or v["id"] == "label-content-name-mismatch"]


@pytest.mark.parametrize("locale, viewport", [("ko-KR", DESKTOP), ("en-US", DESKTOP), ("ko-KR", PHONE)],
                         ids=["korean-desktop", "english-desktop", "korean-phone"])
def test_axe_finds_no_serious_or_critical_problem(browser, served, locale, viewport):
    server, department = served
    add(server, department, event_date="2024-07-09", title="접근성 점검", time="오후 3시", url="https://example.com/a11y")
    page = open_page(browser, f"{server.url}/app/?department={department['id']}&month=2024-07", locale, viewport, axe=True)
    expect(day(page, "2024-07-09")).to_contain_text("접근성 점검")
    assert axe_violations(page) == []
    day(page, "2024-07-09").locator(".event").click() if viewport == DESKTOP else page.locator(".agenda-event button").click()
    expect(page.locator("#event-link")).to_be_visible()
    assert axe_violations(page) == []  # with an event in the form, its link shown


def test_the_keyboard_reaches_the_form_quickly(browser, served):
    """Issue 18: 61 Tab presses to reach the form. Now a skip link comes first, and the month
    is one Tab stop whose days the arrow keys move through."""
    server, department = served
    for date in ("2024-08-05", "2024-08-06", "2024-08-20"):
        add(server, department, event_date=date, title=f"일정 {date}")
    page = open_page(browser, f"{server.url}/app/?department={department['id']}&month=2024-08")
    page.keyboard.press("Tab")
    skip = page.locator(".skip")
    expect(skip).to_be_focused()
    expect(skip).to_be_visible()
    page.keyboard.press("Enter")
    page.keyboard.press("Tab")
    expect(page.locator("#event-date")).to_be_focused()

    page.reload()
    expect(page.locator("#connection")).to_have_attribute("data-state", "online")
    presses = 0
    while not page.evaluate("document.activeElement.id === 'event-title'"):
        page.keyboard.press("Tab")
        presses += 1
        assert presses <= 15, page.evaluate("document.activeElement.outerHTML")
    day_buttons = page.locator("#weeks .day[tabindex='0']")
    expect(day_buttons).to_have_count(1)
    day_buttons.focus()
    page.keyboard.press("ArrowRight")
    expect(page.locator(".day[data-date='2024-08-02']")).to_be_focused()  # from the 1st, the month's first day
    page.keyboard.press("ArrowDown")
    expect(page.locator(".day[data-date='2024-08-09']")).to_be_focused()
    page.keyboard.press("PageDown")
    expect(page.locator("#month-label")).to_have_text("2024년 9월")
    expect(page.locator(".day[data-date='2024-09-01']")).to_be_focused()
    name = page.locator(".day[data-date='2024-09-01']").get_attribute("aria-label")
    assert name.startswith("1, ") and "2024년 9월 1일" in name  # named as it reads, then what it does
    page.keyboard.press("Enter")
    expect(page.locator("#event-title")).to_be_focused()
    expect(page.locator("#event-date")).to_have_value("2024-09-01")


def test_an_admin_creates_renames_and_deletes_departments_in_the_page(browser, served):
    server, department = served
    page = open_page(browser, f"{server.url}/app/?department={department['id']}")
    admin = page.locator("#department-admin")
    expect(admin).to_be_visible()  # auth off: anyone may, as with the API
    admin.locator("summary").click()
    page.fill("#new-department-name", "디자인팀")
    page.locator("#department-create button").click()
    expect(page.locator("#department option:checked")).to_have_text("디자인팀")
    expect(page.locator("#message")).to_have_text("부서를 만들었습니다.")
    page.fill("#department-name", "디자인실")
    page.locator("#department-rename button[type=submit]").click()
    expect(page.locator("#department option:checked")).to_have_text("디자인실")
    page.fill("#new-department-name", "개발팀")
    page.locator("#department-create button").click()
    expect(page.locator("#message")).to_have_text("이미 존재하는 부서 이름입니다.")  # the server's answer, shown
    page.locator("#department-delete").click()  # confirmed by the dialog handler
    expect(page.locator("#department option")).to_have_text(["개발팀"])
    with urllib.request.urlopen(server.url + "/api/departments", timeout=10) as response:
        assert [d["name"] for d in json.loads(response.read())["departments"]] == ["개발팀"]


def test_the_english_page_speaks_english_and_links_open(browser, served):
    server, department = served
    event = add(server, department, event_date="2024-09-10", title="Launch", url="https://example.com/launch")
    page = open_page(browser, f"{server.url}/app/?department={department['id']}&month=2024-09", locale="en-US")
    expect(page.locator("#event-time")).to_have_attribute("placeholder", "2:00 PM - 3:00 PM")
    expect(page.locator(".skip")).to_have_text("Skip to the event form")
    day(page, "2024-09-10").locator(f".event[data-id='{event['id']}']").click()
    link = page.locator("#event-link")
    expect(link).to_have_attribute("href", "https://example.com/launch")
    expect(link).to_have_attribute("target", "_blank")
    page.fill("#event-url", "javascript:alert(1)")
    expect(link).to_be_hidden()  # only http(s) becomes a link
    with urllib.request.urlopen(server.url + "/favicon.ico", timeout=10) as response:
        assert response.status == 200 and response.headers["Content-Type"].startswith("image/")
    assert page.evaluate("fetch('/favicon.ico').then(r => r.status)") == 200
