"""`calsync migrate`: read the source, plan against the target, check, write, verify.

Exit status: 0 when everything was written and verified; 1 when records are invalid, lack
a department, failed to write or differ after writing (nothing is written when the checks
before writing fail); the CLI answers 2 for bad arguments or config.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, TextIO

from calsync.migrations.legacy import LegacyFileError, read_legacy
from calsync.migrations.plan import Plan, Step, plan_from_legacy, plan_from_snapshot
from calsync.migrations.report import Reporter
from calsync.migrations.snapshot import Snapshot, read_snapshot
from calsync.storage.base import Storage
from calsync.storage.errors import CalsyncError
from calsync.storage.records import Department, Event

EVENT_BATCH = 500


#: Opens the storage a config file describes (the CLI's; migrations never read config).
StorageFactory = Callable[[str], Storage]


def no_config_sources(path: str) -> Storage:
    raise SourceError(f"--from {path}: only folders of the original JSON files can be read here")


@dataclass(frozen=True)
class MigrateOptions:
    source: str
    #: For a source that is a config file (backend to backend).
    open_config: StorageFactory = no_config_sources
    default_department: str | None = None
    dry_run: bool = False
    skip_invalid: bool = False
    quiet: bool = False


class SourceError(Exception):
    """The source cannot be used (missing, not a folder of the original files nor a config)."""


async def migrate(options: MigrateOptions, target: Storage, out: TextIO) -> int:
    report = Reporter(out, quiet=options.quiet, dry_run=options.dry_run)
    phase = "읽기"  # which step a storage failure stopped: read, write or verify
    try:
        await target.open()
        plan = await make_plan(options, await read_snapshot(target))
        if not ready_to_write(plan, options, report):
            return 1
        phase = "쓰기"
        await write(plan, target, options, report)
        if options.dry_run:
            report.line()
            report.always("🔎 dry run: 아무것도 쓰지 않았습니다 (nothing was written)")
            report.line("=" * 50)
            return 0
        phase = "검증"
        return await verify(report, target, plan)
    except LegacyFileError as exc:
        report.always(f"❌ {exc}")
        report.always("아무것도 쓰지 않았습니다 (nothing was written).")
        return 1
    except CalsyncError as exc:
        report.always(f"❌ {phase} 실패 ({exc.code}): {exc.message} — 다시 실행하면 이어서 진행합니다 (rerun to resume)")
        return 1


def ready_to_write(plan: Plan, options: MigrateOptions, report: Reporter) -> bool:
    """The checks before any write: invalid records, events without a department."""
    if plan.problems:
        for problem in plan.problems:
            report.always(f"  ✗ {problem}")
        if not options.skip_invalid:
            report.always(f"❌ 잘못된 레코드 {len(plan.problems)}개: 아무것도 쓰지 않았습니다"
                          " (nothing was written; fix them, or rerun with --skip-invalid to write the rest)")
            return False
        report.always(f"⚠️  잘못된 레코드 {len(plan.problems)}개를 건너뜁니다 (skipped, listed above)")
    if plan.lacking_department:
        report.always(f"❌ 부서가 없는 이벤트 {plan.lacking_department}개: 아무것도 쓰지 않았습니다"
                      f" ({plan.lacking_department} events have no department, 0, or an unknown one;"
                      " rerun with --default-department NAME)")
        return False
    return True


async def write(plan: Plan, target: Storage, options: MigrateOptions, report: Reporter) -> None:
    title = f"🚀 {plan.source} → {target.describe()} 마이그레이션 {'계획 (dry run)' if options.dry_run else '시작'}"
    report.banner(title)
    skipped_departments = sum(p.records for p in plan.problems if p.kind == "department")
    skipped_events = sum(p.records for p in plan.problems if p.kind == "event")
    await write_section(report, target, plan.departments, "📋 부서 데이터 마이그레이션 시작...", options.dry_run)
    report.totals("✅ 부서 데이터 마이그레이션 완료", plan.counts(plan.departments), skipped_departments)
    await write_section(report, target, plan.events, "📅 캘린더 이벤트 데이터 마이그레이션 시작...", options.dry_run)
    report.totals("✅ 이벤트 데이터 마이그레이션 완료", plan.counts(plan.events), skipped_events)


async def make_plan(options: MigrateOptions, target: Snapshot) -> Plan:
    source = Path(options.source)
    if source.is_dir():
        return plan_from_legacy(read_legacy(source), target, options.default_department)
    if source.is_file():
        storage = options.open_config(str(source))
        try:
            await storage.open()
            snapshot = await read_snapshot(storage)
        finally:
            await storage.close()
        return plan_from_snapshot(snapshot, target, storage.describe())
    raise SourceError(f"--from {options.source}: no such folder (original JSON files) or config file")


async def write_section(report: Reporter, target: Storage, steps: list[Step], header: str, dry_run: bool) -> None:
    """Write the records that change, in batches; report every record as it is handled."""
    report.start_section(header, len(steps))
    done = 0
    for start in range(0, len(steps), EVENT_BATCH):
        batch = steps[start:start + EVENT_BATCH]
        changed = [step for step in batch if step.outcome != "unchanged"]
        if changed and not dry_run:
            departments = [step.record for step in changed if isinstance(step.record, Department)]
            events = [step.record for step in changed if isinstance(step.record, Event)]
            if departments:
                outcomes = await target.import_departments(departments)
            else:
                for step in changed:
                    if step.moved_from:  # import_events replaces within a department only
                        await target.delete_event(step.record.id)
                outcomes = await target.import_events(events)
            for step, outcome in zip(changed, outcomes, strict=True):
                step.outcome = "updated" if step.moved_from else outcome  # what the store says happened
        for step in batch:
            done += 1
            report.record(step, done)


async def verify(report: Reporter, target: Storage, plan: Plan) -> int:
    """Read every page of the target back and compare each record, field by field."""
    report.line()
    report.line("🔍 마이그레이션 검증 중...")
    after = await read_snapshot(target)
    stored: dict[str, Department | Event] = {d.id: d for d in after.departments}
    stored.update((e.id, e) for e in after.events)
    differing = []
    for kind, steps in (("부서", plan.departments), ("이벤트", plan.events)):
        matching = sum(1 for step in steps if stored.get(step.record.id) == step.record)
        differing += [step for step in steps if stored.get(step.record.id) != step.record]
        report.line(f"  • {kind}: {matching}개 (원본 {len(steps)}개)")
    if differing:
        for step in differing[:20]:
            found = stored.get(step.record.id)
            report.always(f"  ✗ {step.label} [{step.record.id}]: {'missing' if found is None else 'differs'} in the target")
        report.always(f"❌ 마이그레이션 검증 실패: {len(differing)}개 레코드가 원본과 다릅니다")
        return 1
    report.line()
    report.always("✅ 마이그레이션 검증 완료")
    report.line("=" * 50)
    return 0

