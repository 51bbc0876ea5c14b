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
from tests.tools import require

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


def open_page(browser: Browser, url: str, locale: str = "ko-KR") -> Page:
    context = browser.new_context(locale=locale, viewport={"width": 1280, "height": 860})
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
