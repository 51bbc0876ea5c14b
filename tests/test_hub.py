"""The hub on its own: rooms, fan-out, and members that fail."""
from __future__ import annotations

import json

from server.hub import Hub, Push


class Member:
    def __init__(self, fail: bool = False) -> None:
        self.pushes: list[Push] = []
        self.closed: tuple | None = None
        self.fail = fail

    def send(self, push: Push) -> None:
        if self.fail:
            raise ConnectionError("gone")
        self.pushes.append(push)

    def close(self, code=None, reason=None) -> None:
        self.closed = (code, reason)


def test_a_push_is_encoded_once_for_every_member():
    hub, members = Hub(), [Member() for _ in range(3)]
    for member in members:
        hub.add(member)
        hub.join("room", member)
    hub.broadcast("room", "event_created", {"title": "회의"})
    pushes = [m.pushes[0] for m in members]
    assert all(push is pushes[0] for push in pushes)
    assert json.loads(pushes[0].text) == {"event": "event_created", "data": {"title": "회의"}}
    assert "회의" in pushes[0].text  # not \\u-escaped


def test_rooms_are_separate_and_broadcast_all_reaches_everyone():
    hub, a, b, lobby = Hub(), Member(), Member(), Member()
    for member in (a, b, lobby):
        hub.add(member)
    hub.join("one", a)
    hub.join("two", b)
    hub.broadcast("one", "event_created", {})
    assert (len(a.pushes), len(b.pushes), len(lobby.pushes)) == (1, 0, 0)
    hub.broadcast_all("department_created", {})
    assert (len(a.pushes), len(b.pushes), len(lobby.pushes)) == (2, 1, 1)


def test_a_failing_member_is_closed_and_the_others_still_get_the_push():
    hub, good, bad, later = Hub(), Member(), Member(fail=True), Member()
    for member in (good, bad, later):
        hub.add(member)
        hub.join("room", member)
    hub.broadcast("room", "event_created", {})
    assert len(good.pushes) == 1 and len(later.pushes) == 1
    assert bad.closed == (1011, "push failed")
    assert hub.members("room") == 2 and hub.members() == 2


def test_leaving_removing_and_closing_rooms():
    hub, member = Hub(), Member()
    hub.add(member)
    hub.join("one", member)
    hub.join("two", member)
    hub.leave("one", member)
    hub.leave("never", member)  # harmless
    assert (hub.members("one"), hub.members("two")) == (0, 1)
    hub.close_room("two")
    assert hub.members("two") == 0 and hub.members() == 1
    hub.join("three", member)
    hub.remove(member)
    assert hub.members("three") == 0 and hub.members() == 0


def test_close_all_closes_every_connection():
    hub, members = Hub(), [Member() for _ in range(3)]
    for member in members:
        hub.add(member)
        hub.join("room", member)
    hub.close_all(1001, "server shutting down")
    assert all(m.closed == (1001, "server shutting down") for m in members)
    assert hub.members() == 0 and hub.members("room") == 0
