"""Reading an event's free-text `time` as a clock time or a range (contract 10, the .ics feed).

Events keep `time` as people typed it; this says what, if anything, it means on a clock:

    14:00   2:00 PM   2 pm   2 p.m.   오후 2:00   오후 2시   오전 9시 30분   오후 2시 반
    14:00-15:30   오후 2시 ~ 오후 3시   오후 2시 ~ 3시   2pm to 3:30pm

A range's end without 오전/오후 or AM/PM takes the start's. Anything else (`종일`, `점심`,
`TBD`, `25:00`, an end not after its start) reads as no clock time, and the feed makes
an all-day event.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import time

_CLOCK = r"""
    (?:(?P<{p}ko>오전|오후)\s*)?
    (?P<{p}h>\d{{1,2}})
    (?:
        \s*:\s*(?P<{p}m>\d{{2}})(?:\s*시)?
      | \s*(?P<{p}si>시)(?:\s*(?:(?P<{p}km>\d{{1,2}})\s*분|(?P<{p}half>반)))?
    )?
    (?:\s*(?P<{p}en>[ap])\.?\s*m\.?)?
"""
_SEPARATOR = r"\s*(?:-|~|–|—|부터|to)\s*"
READING = re.compile(
    r"^\s*" + _CLOCK.format(p="s") + r"(?:" + _SEPARATOR + _CLOCK.format(p="e") + r"(?:\s*까지)?)?\s*$",
    re.IGNORECASE | re.VERBOSE,
)


@dataclass(frozen=True)
class ClockTime:
    start: time
    end: time | None = None  # None: no end named


def read_clock_time(text: str) -> ClockTime | None:
    """The clock time or range `text` names, or None when it names none."""
    match = READING.match(text or "")
    if match is None:
        return None
    start = _clock(match, "s", None)
    if start is None:
        return None
    if match.group("eh") is None:
        return ClockTime(start[0])
    end = _clock(match, "e", start[1])
    if end is None or end[0] <= start[0]:
        return None
    return ClockTime(start[0], end[0])


def _clock(match: re.Match, prefix: str, inherited: str | None) -> tuple[time, str | None] | None:
    """One side of the reading: the time, and its half of the day (`am`, `pm` or None)."""
    hour = int(match.group(prefix + "h"))
    minute_text = match.group(prefix + "m") or match.group(prefix + "km")
    minute = 30 if match.group(prefix + "half") else int(minute_text or 0)
    korean, english = match.group(prefix + "ko"), match.group(prefix + "en")
    if korean and english:
        return None  # 오후 2 pm: two ways of saying it, and they may not agree
    half = {"오전": "am", "오후": "pm"}.get(korean or "") or (english.lower() + "m" if english else None)
    has_clock = match.group(prefix + "m") is not None or match.group(prefix + "si") is not None
    if half is None and not has_clock and prefix == "s":
        return None  # a bare number ("3") is not a time
    half = half or (inherited if hour <= 12 else None)
    if minute > 59:
        return None
    if half is not None:
        if not 1 <= hour <= 12:
            return None
        hour = hour % 12 + (12 if half == "pm" else 0)
    elif hour > 23:
        return None
    return time(hour, minute), half
