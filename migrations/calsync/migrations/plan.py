"""Deciding what every source record becomes in the target, before anything is written.

The plan is computed against a snapshot of the target, so each record already knows its
outcome (created, updated, unchanged) and `--dry-run` can print it without writing.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Sequence

from calsync.migrations.legacy import LegacyData, Problem, derived_id
from calsync.migrations.snapshot import Snapshot
from calsync.storage.records import Department, Event, import_outcome

EVENT_CONTENT = ("department_id", "event_date", "title", "description", "time", "url")
NO_DEPARTMENT = {None, "0"}


@dataclass
class Step:
    record: Department | Event
    outcome: str  # created, updated, unchanged
    moved_from: str | None = None  # an event stored under another department until now

    @property
    def label(self) -> str:
        record = self.record
        if isinstance(record, Department):
            return f"부서 '{record.name}'"
        return f"이벤트 '{record.title}' ({record.event_date})"


@dataclass
class Plan:
    source: str
    departments: list[Step] = field(default_factory=list)
    events: list[Step] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    lacking_department: int = 0

    def counts(self, steps: Sequence[Step]) -> dict[str, int]:
        counts = {"created": 0, "updated": 0, "unchanged": 0}
        for step in steps:
            counts[step.outcome] += 1
        return counts


def _step(record: Department | Event, existing: Department | Event | None) -> Step:
    step = Step(record, import_outcome(existing, record))
    if isinstance(existing, Event) and isinstance(record, Event) and existing.department_id != record.department_id:
        step.moved_from = existing.department_id
    return step


def plan_from_legacy(data: LegacyData, target: Snapshot, default_department: str | None) -> Plan:
    """Legacy records onto the target: a department whose name the target already has is
    that department; events keep theirs, or go to the default department."""
    plan = Plan("JSON", problems=list(data.problems))
    target_departments = {d.id: d for d in target.departments}
    target_events = {e.id: e for e in target.events}

    mapped: dict[str, Department] = {}  # legacy key -> the department in the target
    for key, record in data.departments.items():
        same_name = target.department_by_name(record.name)
        existing = same_name or target_departments.get(record.id)
        if existing is not None and (existing.name, existing.description) == (record.name, record.description):
            record = existing  # already there as it should be: keep its timestamps
        elif existing is not None:
            record = dataclasses.replace(existing, name=record.name, description=record.description,
                                         updated_at=record.updated_at)
        mapped[key] = record
        plan.departments.append(_step(record, existing))

    default = None
    if default_department:
        default = next((d for d in mapped.values() if d.name == default_department), None)
        if default is None:
            default = target.department_by_name(default_department)
            if default is None:
                default = dataclasses.replace(Department.new(default_department),
                                              id=derived_id("default-department", default_department))
                plan.departments.append(_step(default, None))

    for legacy in data.events:
        legacy_key = legacy.legacy_department
        department = mapped.get(legacy_key) if legacy_key is not None and legacy_key not in NO_DEPARTMENT else None
        department = department or default
        if department is None:
            plan.lacking_department += 1
            continue
        text = legacy.fields
        event = Event(id=legacy.id, department_id=department.id, event_date=text["event_date"], title=text["title"],
                      description=text["description"], time=text["time"], url=text["url"],
                      created_at=legacy.created_at, last_modified=legacy.last_modified, version=1)
        existing_event = target_events.get(event.id)
        if existing_event is not None:
            if all(getattr(existing_event, f) == getattr(event, f) for f in EVENT_CONTENT):
                event = existing_event
            else:
                event = dataclasses.replace(event, created_at=existing_event.created_at,
                                            version=existing_event.version + 1)
        plan.events.append(_step(event, existing_event))
    return plan


def plan_from_snapshot(source: Snapshot, target: Snapshot, label: str) -> Plan:
    """Backend to backend: every record exactly as it is (ids, timestamps, versions)."""
    plan = Plan(label)
    target_departments = {d.id: d for d in target.departments}
    target_events = {e.id: e for e in target.events}
    refused: set[str] = set()
    for record in source.departments:
        holder = target.department_by_name(record.name)
        if holder is not None and holder.id != record.id:
            plan.problems.append(Problem("department", label, f"department {record.id}",
                                         f"the target already has a department named '{record.name}' (id {holder.id})"))
            refused.add(record.id)
            continue
        plan.departments.append(_step(record, target_departments.get(record.id)))
    for event in source.events:
        if event.department_id in refused:
            plan.problems.append(Problem("event", label, f"event {event.id}", "its department is not migrated"))
            continue
        plan.events.append(_step(event, target_events.get(event.id)))
    return plan
