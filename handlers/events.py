"""REST: `/api/events/{department_id}` (list, create) and `/api/events/{event_id}` (update, delete).

One path, two meanings, as in the original server: GET and POST name a department, PUT
and DELETE name an event.
"""
from __future__ import annotations

from handlers.base import ApiHandler
from handlers.schemas import date_range_schema, event_schema


class EventsHandler(ApiHandler):
    async def get(self, department_id: str) -> None:
        query = {name: self.get_query_argument(name) for name in ("from", "to") if name in self.request.query_arguments}
        dates = date_range_schema.parse(query)
        events = await self.storage.list_events(department_id, dates["date_from"], dates["date_to"])
        self.reply(events=event_schema.dump(events, many=True))

    async def post(self, department_id: str) -> None:
        fields = event_schema.parse(self.json_body())
        event = event_schema.dump(await self.storage.create_event(department_id, fields))
        self.hub.broadcast(department_id, "event_created", event)
        self.reply(201, event=event)

    async def put(self, event_id: str) -> None:
        changes = event_schema.parse_changes(self.json_body())
        event = event_schema.dump(await self.storage.update_event(event_id, changes))
        self.hub.broadcast(event["department_id"], "event_updated", event)
        self.reply(event=event)

    async def delete(self, event_id: str) -> None:
        event = await self.storage.delete_event(event_id)
        self.hub.broadcast(event.department_id, "event_deleted", {"id": event.id, "department_id": event.department_id})
        self.reply(message="이벤트가 삭제되었습니다.")


routes = [(r"/api/events/([^/]+)", EventsHandler)]
