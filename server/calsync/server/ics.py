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
    # X- properties are not known to be text, so they are escaped as text explicitly.
    calendar.add("x-wr-calname", icalendar.vText(department.name))
    calendar.add("x-wr-timezone", zone)
    if department.description:
        calendar.add("x-wr-caldesc", icalendar.vText(department.description))
    days: list[date] = []
    for event in events:
        calendar.add_component(_vevent(event, tz, default_minutes))
        days.append(date.fromisoformat(event.event_date))
    if days:
        calendar.add_missing_timezones(first_date=_days_from(min(days), -366), last_date=_days_from(max(days), 366))
    return calendar.to_ical()


#: The VTIMEZONE describes the zone over these years at most: icalendar steps past either end
#: of what a date can hold when an event sits in year 1 or year 9999.
ZONE_YEARS = (date(2, 1, 1), date(9998, 12, 31))


def _days_from(day: date, days: int) -> date:
    """`day` moved by `days`, kept within `ZONE_YEARS`."""
    first, last = (edge.toordinal() for edge in ZONE_YEARS)
    return date.fromordinal(min(max(day.toordinal() + days, first), last))


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
        _add_end(vevent, day, timedelta(days=1))
    else:
        start = datetime.combine(day, clock.start, tz)
        vevent.add("dtstart", start)
        if clock.end:
            vevent.add("dtend", datetime.combine(day, clock.end, tz))
        else:
            _add_end(vevent, start, timedelta(minutes=default_minutes))
    if event.time and clock is None:
        vevent.add("comment", event.time)  # kept as written, for people
    vevent.add("dtstamp", _instant(event.last_modified))
    vevent.add("created", _instant(event.created_at))
    vevent.add("last-modified", _instant(event.last_modified))
    vevent.add("sequence", max(event.version - 1, 0))
    return vevent


def _add_end(vevent: "icalendar.Event", start: date, length: timedelta) -> None:
    """DTEND, as calendar apps expect; DURATION where the end would be past 9999-12-31."""
    try:
        vevent.add("dtend", start + length)
    except OverflowError:
        vevent.add("duration", length)
