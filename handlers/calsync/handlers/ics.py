"""`GET /api/departments/{id}/events.ics`: the department as a calendar apps subscribe to.

Calendar apps cannot send headers, so with auth on the token may come as `?token=` (never
logged: access lines leave out the query string).
"""
from __future__ import annotations

import hashlib

from calsync.handlers.base import ApiHandler
from calsync.handlers.preconditions import none_match
from calsync.server.ics import calendar_of


class IcsHandler(ApiHandler):
    token_in_query = True

    async def get(self, department_id: str) -> None:
        self.grant.require_read(department_id)
        department = await self.calendar.get_department(department_id)
        state = await self.answers.state(department_id)
        zone, minutes = self.context.timezone, self.context.ics_default_minutes
        version = f"{state.epoch}.{state.seq}.{department.name}.{department.description}.{zone}.{minutes}"
        etag = '"ics-%s"' % hashlib.sha256(version.encode("utf-8")).hexdigest()[:24]
        self.set_header("ETag", etag)
        if none_match(self.request.headers.get("If-None-Match"), etag):
            self.set_status(304)
            self.finish()
            return
        events = await self.calendar.list_events(department_id)
        self.set_header("Content-Type", "text/calendar; charset=utf-8")
        self.set_header("Cache-Control", "no-cache")
        self.finish(calendar_of(department, events, zone, minutes))


routes = [(r"/api/departments/([^/]+)/events\.ics", IcsHandler)]
