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
    if isinstance(existing, Event) and existing.department_id != record.department_id:
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
        department = mapped.get(legacy.legacy_department) if legacy.legacy_department not in NO_DEPARTMENT else None
        department = department or default
        if department is None:
            plan.lacking_department += 1
            continue
        record = Event(id=legacy.id, department_id=department.id, created_at=legacy.created_at,
                       last_modified=legacy.last_modified, version=1, **legacy.fields)
        existing = target_events.get(record.id)
        if existing is not None:
            if all(getattr(existing, f) == getattr(record, f) for f in EVENT_CONTENT):
                record = existing
            else:
                record = dataclasses.replace(record, created_at=existing.created_at, version=existing.version + 1)
        plan.events.append(_step(record, existing))
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
    for record in source.events:
        if record.department_id in refused:
            plan.problems.append(Problem("event", label, f"event {record.id}", "its department is not migrated"))
            continue
        plan.events.append(_step(record, target_events.get(record.id)))
    return plan
