"""REST: `/api/departments` and `/api/departments/{id}`."""
from __future__ import annotations

from calsync.handlers.base import ApiHandler
from calsync.storage.fields import department_schema


class DepartmentsHandler(ApiHandler):
    async def get(self) -> None:
        departments = await self.calendar.list_departments()
        self.reply(departments=[d.to_dict() for d in departments if self.grant.can_read(d.id)])

    async def post(self) -> None:
        self.grant.require_admin()
        fields = department_schema.parse(self.json_body())
        change = await self.calendar.create_department(**fields, idempotency=self.idempotency(fields))
        self.reply_created(change, "department")


class DepartmentHandler(ApiHandler):
    async def get(self, department_id: str) -> None:
        self.grant.require_read(department_id)
        department = await self.calendar.get_department(department_id)
        self.reply(department=department.to_dict())

    async def put(self, department_id: str) -> None:
        self.grant.require_admin()
        changes = department_schema.parse_changes(self.json_body())
        change = await self.calendar.update_department(department_id, changes)
        self.reply(department=change.record.to_dict())

    async def delete(self, department_id: str) -> None:
        self.grant.require_admin()
        await self.calendar.delete_department(department_id)
        self.reply(message="부서가 삭제되었습니다.")


routes = [
    (r"/api/departments", DepartmentsHandler),
    (r"/api/departments/([^/]+)", DepartmentHandler),
]
