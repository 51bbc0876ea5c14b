"""REST: `/api/events/{department_id}` (list, create) and `/api/events/{event_id}` (update, delete).

One path, two meanings, as in the original server: GET and POST name a department, PUT
and DELETE name an event.
"""
from __future__ import annotations

from calsync.handlers.base import ApiHandler
from calsync.handlers.preconditions import event_etag, if_match_versions, none_match
from calsync.handlers.schemas import events_query_schema
from calsync.server.answers import etag_of
from calsync.storage.fields import event_schema


class EventsHandler(ApiHandler):
    async def get(self, department_id: str) -> None:
        self.grant.require_read(department_id)
        query = events_query_schema.parse({name: self.get_query_argument(name) for name in self.request.query_arguments
                                           if name in ("from", "to", "since", "epoch", "limit")})
        cursor = events_query_schema.cursor(query)
        if cursor is None and query["date_from"] is None and query["date_to"] is None:
            # The plain list: cheap to poll, 304 while the department's feed has not moved.
            state = await self.answers.state(department_id)
            etag = etag_of(state.epoch, state.seq)
            if none_match(self.request.headers.get("If-None-Match"), etag):
                self.set_header("ETag", etag)
                self.set_status(304)
                self.finish()
                return
            answer = await self.answers.full(department_id, state)
        else:
            answer = await self.answers.since(department_id, cursor, events_query_schema.page_limit(query),
                                              query["date_from"], query["date_to"])
        self.reply_answer(answer)

    async def post(self, department_id: str) -> None:
        self.grant.require_write(department_id)
        fields = event_schema.parse(self.json_body())
        change = await self.calendar.create_event(department_id, fields, self.idempotency(fields))
        self.set_header("ETag", event_etag(change.record.version))
        self.reply_created(change, "event")

    async def put(self, event_id: str) -> None:
        await self._require_write(event_id)
        changes = event_schema.parse_changes(self.json_body())
        change = await self.calendar.update_event(event_id, changes, self._if_match())
        self.set_header("ETag", event_etag(change.record.version))
        self.reply(event=change.record.to_dict())

    async def delete(self, event_id: str) -> None:
        await self._require_write(event_id)
        await self.calendar.delete_event(event_id, self._if_match())
        self.reply(message="이벤트가 삭제되었습니다.")

    async def _require_write(self, event_id: str) -> None:
        """The event's department decides (a token that may read it learns it exists)."""
        if not self.grant.is_admin:
            self.grant.require_write((await self.calendar.get_event(event_id)).department_id)

    def _if_match(self) -> frozenset[int] | None:
        return if_match_versions(self.request.headers.get("If-Match"))


routes = [(r"/api/events/([^/]+)", EventsHandler)]
