"""Every change the server acknowledged survives a `kill -9`, and the store loads cleanly after."""
from __future__ import annotations

import threading
import time
import urllib.error

import pytest

from tests.process import ServerProcess, http_json, write_config

WRITERS = 8


@pytest.mark.parametrize("backend, writers", [("sqlite", WRITERS), ("json", WRITERS), ("sqlite", 64)])
def test_acknowledged_writes_survive_sigkill(tmp_path, backend, writers):
    config = write_config(tmp_path, f"storage:\n  backend: {backend}\n")
    server = ServerProcess(config)
    acknowledged: list[str] = []
    stop = threading.Event()
    try:
        _, body = http_json(server.url + "/api/departments", "POST", {"name": "개발팀"})
        department_id = body["department"]["id"]

        def writer(number: int) -> None:
            for i in range(10_000):
                if stop.is_set():
                    return
                try:
                    status, body = http_json(server.url + f"/api/events/{department_id}", "POST",
                                             {"event_date": "2024-01-20", "title": f"writer {number} #{i}"})
                except (urllib.error.URLError, ConnectionError, OSError):
                    return  # the server is gone; this request was never acknowledged
                assert status == 201
                acknowledged.append(body["event"]["id"])

        threads = [threading.Thread(target=writer, args=(n,)) for n in range(writers)]
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + 20
        while len(acknowledged) < 200 and time.monotonic() < deadline:
            time.sleep(0.01)
        server.kill()  # SIGKILL, in the middle of the writes
        stop.set()
        for thread in threads:
            thread.join(30)
    finally:
        stop.set()
        server.kill()

    assert len(acknowledged) >= 200
    restarted = ServerProcess(config)
    try:
        status, body = http_json(restarted.url + f"/api/events/{department_id}")
        assert status == 200
        stored = {event["id"] for event in body["events"]}
        assert set(acknowledged) <= stored
        assert len(stored) - len(acknowledged) <= writers  # at most one in flight per writer
        # the store is not only readable but writable
        assert http_json(restarted.url + f"/api/events/{department_id}", "POST",
                         {"event_date": "2024-01-21", "title": "after the crash"})[0] == 201
    finally:
        assert restarted.stop() == 0
