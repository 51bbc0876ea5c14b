"""A department's events as an iCalendar feed (RFC 5545, contract 10), built with `icalendar`.

Calendar apps poll the feed and match events by UID, so UIDs are stable
(`<event id>@calsync`) and SEQUENCE rises with every edit (`version - 1`). An event whose
`time` reads as a clock time or range (`server/clocktime.py`) is timed in
`server.timezone`, with that zone's VTIMEZONE in the feed; any other is all-day.
"""
from __future__ import annotations

import zoneinfo
from datetime import date, datetime, timedelta, timezone
from typing import TYPE_CHECKING, Iterable

from calsync.server.clocktime import read_clock_time
from calsync.server.version import __version__
from calsync.storage.records import Department, Event

if TYPE_CHECKING:
    import icalendar

PRODUCT = f"-//calsync//calsync {__version__}//KO"


def _instant(stamp: str) -> datetime:
    """A record's `created_at`/`last_modified` (`2024-01-20T09:00:00.000Z`) as UTC."""
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).astimezone(timezone.utc)


def calendar_of(department: Department, events: Iterable[Event], zone: str, default_minutes: int) -> bytes:
    import icalendar  # on first use: a server nobody subscribes to does not carry it

    tz = zoneinfo.ZoneInfo(zone)
    calendar = icalendar.Calendar()
    calendar.add("prodid", PRODUCT)
    calendar.add("version", "2.0")
    calendar.add("calscale", "GREGORIAN")
    calendar.add("x-wr-calname", department.name)
    calendar.add("x-wr-timezone", zone)
    if department.description:
        calendar.add("x-wr-caldesc", department.description)
    days: list[date] = []
    for event in events:
        calendar.add_component(_vevent(event, tz, default_minutes))
        days.append(date.fromisoformat(event.event_date))
    if days:
        calendar.add_missing_timezones(first_date=min(days) - timedelta(days=366), last_date=max(days) + timedelta(days=366))
    return calendar.to_ical()


def _vevent(event: Event, tz: zoneinfo.ZoneInfo, default_minutes: int) -> "icalendar.Event":
    import icalendar

    vevent = icalendar.Event()
    vevent.add("uid", f"{event.id}@calsync")
    vevent.add("summary", event.title)
    if event.description:
        vevent.add("description", event.description)
    if event.url:
        vevent.add("url", event.url)
    day = date.fromisoformat(event.event_date)
    clock = read_clock_time(event.time)
    if clock is None:
        vevent.add("dtstart", day)
        vevent.add("dtend", day + timedelta(days=1))
    else:
        start = datetime.combine(day, clock.start, tz)
        end = datetime.combine(day, clock.end, tz) if clock.end else start + timedelta(minutes=default_minutes)
        vevent.add("dtstart", start)
        vevent.add("dtend", end)
    if event.time and clock is None:
        vevent.add("comment", event.time)  # kept as written, for people
    vevent.add("dtstamp", _instant(event.last_modified))
    vevent.add("created", _instant(event.created_at))
    vevent.add("last-modified", _instant(event.last_modified))
    vevent.add("sequence", max(event.version - 1, 0))
    return vevent
