"""The hub on its own: publishing changes, rooms, joining without gaps, failing members."""
from __future__ import annotations

import dataclasses
import json

from calsync.server.hub import Hub, Push, push_of
from calsync.storage.feed import Change, Kind
from calsync.storage.records import Department, Event

DEPARTMENT = Department.new("개발팀")
EVENT = Event.new(DEPARTMENT.id, {"event_date": "2024-01-20", "title": "회의"})


def event_change(kind: str = Kind.EVENT_CREATED, seq: int = 1, department_id: str = DEPARTMENT.id) -> Change:
    return Change(kind, dataclasses.replace(EVENT, seq=seq, department_id=department_id), seq)


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

    def hears(self, department_id: str) -> bool:
        return department_id not in self.deaf_to

    deaf_to: frozenset = frozenset()

    def frames(self) -> list[dict]:
        return [json.loads(push.text) for push in self.pushes]


def joined(hub: Hub, room: str, *members: Member) -> None:
    for member in members:
        hub.add(member)
        hub.join(room, member)
        hub.go_live(room, member, 0)


def test_each_kind_of_change_has_its_room_event_and_payload():
    department = dataclasses.replace(DEPARTMENT, seq=3)
    assert push_of(Change(Kind.DEPARTMENT_CREATED, department)) == (None, "department_created", department.to_dict())
    assert push_of(Change(Kind.DEPARTMENT_UPDATED, department)) == (None, "department_updated", department.to_dict())
    assert push_of(Change(Kind.DEPARTMENT_DELETED, department)) == (None, "department_deleted", {"id": department.id})
    created = event_change(Kind.EVENT_CREATED, 4)
    assert push_of(created) == (DEPARTMENT.id, "event_created", created.record.to_dict())
    assert push_of(event_change(Kind.EVENT_UPDATED, 5))[1:] == ("event_updated", event_change(Kind.EVENT_UPDATED, 5).record.to_dict())
    assert push_of(event_change(Kind.EVENT_DELETED, 6)) == (
        DEPARTMENT.id, "event_deleted", {"id": EVENT.id, "department_id": DEPARTMENT.id, "seq": 6})


def test_a_push_is_encoded_once_for_every_member():
    hub, members = Hub(), [Member() for _ in range(3)]
    joined(hub, DEPARTMENT.id, *members)
    hub.publish(event_change())
    pushes = [m.pushes[0] for m in members]
    assert all(push is pushes[0] for push in pushes)
    assert json.loads(pushes[0].text) == {"event": "event_created", "data": event_change().record.to_dict()}
    assert pushes[0].seq == 1
    assert "회의" in pushes[0].text  # not \\u-escaped


def test_rooms_are_separate_and_department_changes_reach_everyone():
    hub, a, b, lobby = Hub(), Member(), Member(), Member()
    hub.add(lobby)
    joined(hub, "one", a)
    joined(hub, "two", b)
    hub.publish(event_change(department_id="one"))
    assert (len(a.pushes), len(b.pushes), len(lobby.pushes)) == (1, 0, 0)
    hub.publish(Change(Kind.DEPARTMENT_CREATED, DEPARTMENT))
    assert (len(a.pushes), len(b.pushes), len(lobby.pushes)) == (2, 1, 1)


def test_department_pushes_reach_only_those_who_may_hear_of_it():
    hub, everyone, elsewhere = Hub(), Member(), Member()
    elsewhere.deaf_to = frozenset({DEPARTMENT.id})
    hub.add(everyone)
    hub.add(elsewhere)
    for kind in (Kind.DEPARTMENT_CREATED, Kind.DEPARTMENT_UPDATED, Kind.DEPARTMENT_DELETED):
        hub.publish(Change(kind, DEPARTMENT))
    assert (len(everyone.pushes), len(elsewhere.pushes)) == (3, 0)


def test_a_deleted_department_closes_its_room():
    hub, member = Hub(), Member()
    joined(hub, DEPARTMENT.id, member)
    hub.publish(Change(Kind.DEPARTMENT_DELETED, DEPARTMENT))
    assert member.frames()[-1] == {"event": "department_deleted", "data": {"id": DEPARTMENT.id}}
    assert hub.members(DEPARTMENT.id) == 0 and hub.members() == 1


def test_joining_holds_pushes_and_releases_only_those_after_the_catch_up():
    hub, member, other = Hub(), Member(), Member()
    joined(hub, DEPARTMENT.id, other)
    hub.add(member)
    hub.join(DEPARTMENT.id, member)
    for seq in (1, 2, 3):  # stored while the catch-up is read; the catch-up covers 1 and 2
        hub.publish(event_change(Kind.EVENT_UPDATED, seq))
    assert member.pushes == [] and len(other.pushes) == 3
    hub.go_live(DEPARTMENT.id, member, 2)
    hub.publish(event_change(Kind.EVENT_UPDATED, 4))
    assert [push.seq for push in member.pushes] == [3, 4]


def test_leaving_while_joining_drops_the_held_pushes():
    hub, member = Hub(), Member()
    hub.add(member)
    hub.join(DEPARTMENT.id, member)
    hub.publish(event_change())
    hub.leave(DEPARTMENT.id, member)
    hub.go_live(DEPARTMENT.id, member, 0)
    hub.publish(event_change(seq=2))
    assert member.pushes == [] and hub.members(DEPARTMENT.id) == 0


def test_a_failing_member_is_closed_and_the_others_still_get_the_push():
    hub, good, bad, later = Hub(), Member(), Member(fail=True), Member()
    joined(hub, DEPARTMENT.id, good, bad, later)
    hub.publish(event_change())
    assert len(good.pushes) == 1 and len(later.pushes) == 1
    assert bad.closed == (1011, "push failed")
    assert hub.members(DEPARTMENT.id) == 2 and hub.members() == 2


def test_leaving_removing_and_closing_rooms():
    hub, member = Hub(), Member()
    joined(hub, "one", member)
    joined(hub, "two", member)
    hub.leave("one", member)
    hub.leave("never", member)  # harmless
    assert (hub.members("one"), hub.members("two")) == (0, 1)
    hub.close_room("two")
    assert hub.members("two") == 0 and hub.members() == 1
    joined(hub, "three", member)
    hub.join("four", member)
    hub.remove(member)
    assert hub.members("three") == 0 and hub.members() == 0
    hub.go_live("four", member, 0)  # removed while joining: stays out
    assert hub.members("four") == 0


def test_close_all_closes_every_connection():
    hub, members = Hub(), [Member() for _ in range(3)]
    joined(hub, "room", *members)
    hub.close_all(1001, "server shutting down")
    assert all(m.closed == (1001, "server shutting down") for m in members)
    assert hub.members() == 0 and hub.members("room") == 0


def test_a_catch_up_ahead_of_the_pushes_is_not_repeated_by_them():
    """A store whose reads can overtake its write's answer (DynamoDB's reads run beside its
    writer) can put a change in a catch-up before that change is published."""
    hub, late, live = Hub(), Member(), Member()
    joined(hub, DEPARTMENT.id, live)
    hub.publish(event_change(seq=1))
    hub.add(late)
    hub.join(DEPARTMENT.id, late)
    hub.go_live(DEPARTMENT.id, late, 3)  # its catch-up held 2 and 3, not yet published
    for seq in (2, 3, 4):
        hub.publish(event_change(Kind.EVENT_UPDATED, seq))
    assert [push.seq for push in late.pushes] == [4]
    assert [push.seq for push in live.pushes] == [1, 2, 3, 4]
