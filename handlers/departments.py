"""REST: `/api/departments` and `/api/departments/{id}`."""
from __future__ import annotations

from handlers.base import ApiHandler
from handlers.schemas import department_schema


class DepartmentsHandler(ApiHandler):
    async def get(self) -> None:
        departments = await self.storage.list_departments()
        self.reply(departments=department_schema.dump(departments, many=True))

    async def post(self) -> None:
        fields = department_schema.parse(self.json_body())
        department = department_schema.dump(await self.storage.create_department(**fields))
        self.hub.broadcast_all("department_created", department)
        self.reply(201, department=department)


class DepartmentHandler(ApiHandler):
    async def get(self, department_id: str) -> None:
        department = await self.storage.get_department(department_id)
        self.reply(department=department_schema.dump(department))

    async def delete(self, department_id: str) -> None:
        await self.storage.delete_department(department_id)
        self.hub.broadcast_all("department_deleted", {"id": department_id})
        self.hub.close_room(department_id)
        self.reply(message="부서가 삭제되었습니다.")


routes = [
    (r"/api/departments", DepartmentsHandler),
    (r"/api/departments/([^/]+)", DepartmentHandler),
]
