"""`calsync migrate`: the original JSON files and backend-to-backend copies, nothing lost.

Each of the original script's four ways of losing data is a test here: events attached to
the wrong department, duplicates on a rerun, verification stopping at one 1 MB page, and
success reported after records failed.
"""
from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import pytest

from calsync.migrations.legacy import department_id_for, derived_id
from calsync.migrations.runner import MigrateOptions, migrate
from calsync.migrations.snapshot import read_snapshot
from calsync.server.config import load_config
from calsync.storage.records import Event
from tests.process import run_cli, write_config

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture(params=["memory", "sqlite", "json", "dynamodb"])
def backend(request) -> str:
    """Targets for the original files (DynamoDB over HTTP is a target in the copies below)."""
    return request.param


@pytest.fixture
def pair(request, storage_factory):
    """A (source, target) pair of opened storages, named by `request.param`."""
    source_name, target_name = request.param
    return storage_factory(source_name), storage_factory(target_name)


@pytest.fixture
def legacy(tmp_path) -> Path:
    """A copy of the PascalCase fixture the test may change."""
    folder = tmp_path / "legacy"
    shutil.copytree(FIXTURES / "legacy_pascal", folder)
    return folder


async def run_migrate(target, source, **options) -> tuple[int, str]:
    out = io.StringIO()
    options.setdefault("open_config", lambda path: load_config(path).make_storage())  # as the CLI does
    status = await migrate(MigrateOptions(source=str(source), **options), target, out)
    return status, out.getvalue()


def by_title(snapshot) -> dict[str, list[Event]]:
    titles: dict[str, list[Event]] = {}
    for event in snapshot.events:
        titles.setdefault(event.title, []).append(event)
    return titles


# -- from the original files ------------------------------------------------------------

def test_cli_migrates_the_original_files_with_the_original_output(tmp_path):
    config = write_config(tmp_path, "storage:\n  backend: sqlite\n")
    result = run_cli("migrate", "--from", str(FIXTURES / "legacy_pascal"), "--config", str(config))
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    for line in ["=" * 50, "📋 부서 데이터 마이그레이션 시작...", "  ✓ 부서 '개발팀' 마이그레이션 완료",
                 "✅ 부서 데이터 마이그레이션 완료: 2개 (생성 2, 수정 0, 변경 없음 0, 건너뜀 0)",
                 "📅 캘린더 이벤트 데이터 마이그레이션 시작...",
                 "  ✓ 이벤트 '팀 회의' (2024-01-20) 마이그레이션 완료",
                 "✅ 이벤트 데이터 마이그레이션 완료: 4개 (생성 4, 수정 0, 변경 없음 0, 건너뜀 0)",
                 "🔍 마이그레이션 검증 중...", "  • 부서: 2개 (원본 2개)", "  • 이벤트: 4개 (원본 4개)",
                 "✅ 마이그레이션 검증 완료"]:
        assert line in out.splitlines(), (line, out)
    assert "🚀 JSON → sqlite" in out

    again = run_cli("migrate", "--from", str(FIXTURES / "legacy_pascal"), "--config", str(config))
    assert again.returncode == 0
    assert "✅ 이벤트 데이터 마이그레이션 완료: 4개 (생성 0, 수정 0, 변경 없음 4, 건너뜀 0)" in again.stdout


async def test_events_keep_their_department(storage, legacy):
    status, out = await run_migrate(storage, legacy)
    assert status == 0, out
    snapshot = await read_snapshot(storage)
    departments = {d.name: d for d in snapshot.departments}
    assert departments["개발팀"].id == department_id_for("1") and departments["마케팅팀"].id == department_id_for("2")
    assert departments["마케팅팀"].created_at == "2023-12-01T09:00:00.000Z"
    titles = by_title(snapshot)
    assert {e.department_id for e in titles["팀 회의"]} == {departments["개발팀"].id}
    assert titles["캠페인 기획"][0].department_id == departments["마케팅팀"].id
    assert titles["윤년 행사"][0].department_id == departments["개발팀"].id


async def test_fields_ids_and_times_from_the_files(storage, legacy):
    await run_migrate(storage, legacy)
    titles = by_title(await read_snapshot(storage))
    meeting = next(e for e in titles["팀 회의"] if e.event_date == "2024-01-20")
    assert meeting.id == derived_id("event", "101")
    assert (meeting.description, meeting.time, meeting.url, meeting.version) == ("주간 팀 회의", "오후 2:00",
                                                                                 "https://example.com", 1)
    assert meeting.last_modified == "2024-01-15T10:30:00.000Z" == meeting.created_at
    assert titles["캠페인 기획"][0].last_modified == "2024-01-16T09:00:00.123Z"
    leap = titles["윤년 행사"][0]
    assert (leap.id, leap.time, leap.url) == (derived_id("event", "102"), "", "")
    assert leap.last_modified == "2024-01-31T15:00:00.000Z"  # +09:00 made UTC


async def test_same_title_on_two_dates_both_survive(storage, legacy):
    await run_migrate(storage, legacy)
    meetings = by_title(await read_snapshot(storage))["팀 회의"]
    assert sorted(e.event_date for e in meetings) == ["2024-01-20", "2024-01-21"]
    assert len({e.id for e in meetings}) == 2


async def test_rerun_changes_nothing(storage, legacy):
    await run_migrate(storage, legacy)
    first = await read_snapshot(storage)
    epochs = {d.id: d.epoch for d in first.departments}
    status, out = await run_migrate(storage, legacy)
    assert status == 0 and "(생성 0, 수정 0, 변경 없음 4, 건너뜀 0)" in out
    assert await read_snapshot(storage) == first
    assert {d.id: d.epoch for d in await storage.list_departments()} == epochs  # nothing written, same feeds


async def test_rerun_after_an_edit_updates_only_that_event(storage, legacy):
    await run_migrate(storage, legacy)
    epochs = {d.id: d.epoch for d in await storage.list_departments()}
    events = json.loads((legacy / "calendar_events.json").read_text())
    events["2024-01-20"][0]["Title"] = "팀 회의 (변경)"
    (legacy / "calendar_events.json").write_text(json.dumps(events, ensure_ascii=False))
    status, out = await run_migrate(storage, legacy)
    assert status == 0 and "(생성 0, 수정 1, 변경 없음 3, 건너뜀 0)" in out
    changed = by_title(await read_snapshot(storage))["팀 회의 (변경)"][0]
    assert changed.id == derived_id("event", "101") and changed.version == 2
    # a migrated department starts a new epoch: its clients start over
    assert (await storage.get_department(changed.department_id)).epoch != epochs[changed.department_id]


async def test_windows_line_ends_become_newlines(storage, legacy):
    """The old server stored text as sent; calsync refuses a carriage return (contract 13), so
    the migration turns "\r\n" and "\r" into newlines rather than refusing the record."""
    events = json.loads((legacy / "calendar_events.json").read_text())
    events["2024-01-20"][0]["Title"] = "팀 회의\r\n"
    events["2024-01-20"][0]["Description"] = "첫 줄\r\n둘째 줄\r셋째 줄"
    (legacy / "calendar_events.json").write_text(json.dumps(events, ensure_ascii=False))
    status, _ = await run_migrate(storage, legacy)
    assert status == 0
    event = by_title(await read_snapshot(storage))["팀 회의"][0]
    assert event.description == "첫 줄\n둘째 줄\n셋째 줄"


async def test_rerun_after_a_department_change_moves_the_event(storage, legacy):
    await run_migrate(storage, legacy)
    events = json.loads((legacy / "calendar_events.json").read_text())
    events["2024-01-20"][0]["DepartmentId"] = 2
    (legacy / "calendar_events.json").write_text(json.dumps(events, ensure_ascii=False))
    status, out = await run_migrate(storage, legacy)
    assert status == 0 and "(생성 0, 수정 1, 변경 없음 3, 건너뜀 0)" in out, out
    snapshot = await read_snapshot(storage)
    moved = [e for e in snapshot.events if e.id == derived_id("event", "101")]
    assert len(moved) == 1 and moved[0].department_id == department_id_for("2")
    assert len(snapshot.events) == 4


async def test_events_without_a_department_need_the_option(storage):
    status, out = await run_migrate(storage, FIXTURES / "legacy_camel")
    assert status == 1
    assert "부서가 없는 이벤트 3개" in out and "--default-department" in out
    assert await storage.list_departments() == []


async def test_default_department_is_created_and_used(storage):
    status, out = await run_migrate(storage, FIXTURES / "legacy_camel", default_department="미지정")
    assert status == 0, out
    snapshot = await read_snapshot(storage)
    departments = {d.name: d.id for d in snapshot.departments}
    assert set(departments) == {"개발팀", "인사팀", "미지정"}
    homes = {e.title: e.department_id for e in snapshot.events}
    assert homes["전사 공지"] == homes["부서 없는 일정"] == homes["사라진 부서의 일정"] == departments["미지정"]
    assert homes["스프린트 계획"] == homes["아이디 없는 일정"] == departments["개발팀"]
    assert homes["면접"] == departments["인사팀"]
    status, out = await run_migrate(storage, FIXTURES / "legacy_camel", default_department="미지정")
    assert status == 0 and "(생성 0, 수정 0, 변경 없음 6, 건너뜀 0)" in out
    assert await read_snapshot(storage) == snapshot


async def test_existing_departments_are_reused_by_name(storage):
    existing = (await storage.create_department("개발팀", "소프트웨어 개발")).record
    default = (await storage.create_department("미지정")).record
    status, out = await run_migrate(storage, FIXTURES / "legacy_camel", default_department="미지정")
    assert status == 0, out
    snapshot = await read_snapshot(storage)
    assert sorted(d.name for d in snapshot.departments) == ["개발팀", "미지정", "인사팀"]
    homes = {e.title: e.department_id for e in snapshot.events}
    assert homes["스프린트 계획"] == existing.id and homes["전사 공지"] == default.id


async def test_dry_run_writes_nothing(storage, legacy):
    status, out = await run_migrate(storage, legacy, dry_run=True)
    assert status == 0
    assert "  • 부서 '개발팀': 생성 예정" in out and "  • 이벤트 '팀 회의' (2024-01-20): 생성 예정" in out
    assert "dry run" in out
    assert await storage.list_departments() == []


@pytest.mark.parametrize("file, text, expected", [
    ("calendar_events.json", '{"2024-01-20": [ {"Title": "x",, } ]}', "calendar_events.json: line 1, column 32"),
    ("departments.json", "[[[", "departments.json: line 1, column 4"),
    ("departments.json", '{"departments": 5}', 'departments.json: expected {"departments": [...]}'),
    ("calendar_events.json", '["2024-01-20"]', "calendar_events.json: expected"),
])
async def test_malformed_file_names_the_place_and_writes_nothing(storage, legacy, file, text, expected):
    (legacy / file).write_text(text)
    status, out = await run_migrate(storage, legacy)
    assert status == 1 and expected in out, out
    assert await storage.list_departments() == []


async def test_invalid_records_stop_everything_unless_skipped(storage, legacy):
    events = json.loads((legacy / "calendar_events.json").read_text())
    events["2024-13-01"] = [{"Title": "잘못된 날짜", "DepartmentId": 1}]
    events["2024-01-20"].append({"Description": "제목 없음", "DepartmentId": 1})
    events["2024-01-21"].append({"Title": "x", "Url": "not a url", "DepartmentId": 1})
    (legacy / "calendar_events.json").write_text(json.dumps(events, ensure_ascii=False))

    status, out = await run_migrate(storage, legacy)
    assert status == 1
    assert "calendar_events.json: date key '2024-13-01':" in out
    assert "calendar_events.json: date key '2024-01-20', index 2: title:" in out
    assert "calendar_events.json: date key '2024-01-21', index 1: url:" in out
    assert "아무것도 쓰지 않았습니다" in out and await storage.list_departments() == []

    status, out = await run_migrate(storage, legacy, skip_invalid=True)
    assert status == 0, out
    assert "잘못된 레코드 3개를 건너뜁니다" in out and "건너뜀 3)" in out
    assert len((await read_snapshot(storage)).events) == 4


async def test_quiet_prints_only_the_outcome(storage, legacy):
    status, out = await run_migrate(storage, legacy, quiet=True)
    assert status == 0 and out.strip() == "✅ 마이그레이션 검증 완료"


async def test_large_input_shows_a_progress_bar(storage, tmp_path):
    folder = tmp_path / "big"
    folder.mkdir()
    (folder / "departments.json").write_text(json.dumps({"departments": [{"id": 1, "name": "개발팀"}]}))
    events = {f"2024-{m:02d}-{d:02d}": [{"Title": f"회의 {m}-{d}-{i}", "DepartmentId": 1} for i in range(3)]
              for m in range(1, 13) for d in range(1, 29)}
    (folder / "calendar_events.json").write_text(json.dumps(events, ensure_ascii=False))
    status, out = await run_migrate(storage, folder)
    assert status == 0, out
    assert "[####################] 100% 1008/1008" in out and "✓ 이벤트" not in out
    assert len((await read_snapshot(storage)).events) == 1008


# -- backend to backend -------------------------------------------------------------------

async def fill(storage, departments: int = 3, events: int = 5, padding: str = "") -> None:
    for d in range(departments):
        department = (await storage.create_department(f"부서 {d}", "설명")).record
        for e in range(events):
            event = (await storage.create_event(department.id, {"event_date": f"2024-01-{e + 1:02d}",
                                                               "title": f"일정 {d}-{e}", "description": padding})).record
            if e % 2:
                (await storage.update_event(event.id, {"time": "오후 2:00"})).record


def config_for(tmp_path: Path, storage, name: str) -> Path:
    """A config file naming `storage`, as `--from` takes it."""
    options = storage.options
    if name == "sqlite":
        body = f"  backend: sqlite\n  sqlite:\n    path: {options.path}\n"
    elif name == "json":
        body = f"  backend: json\n  json:\n    path: {options.path}\n"
    else:
        body = (f"  backend: dynamodb\n  dynamodb:\n    endpoint_url: {options.endpoint_url}\n"
                f"    departments_table: {options.departments_table}\n    events_table: {options.events_table}\n"
                f"    changes_table: {options.changes_table}\n")
    return write_config(tmp_path, f"storage:\n{body}", f"source-{name}.yaml")


@pytest.mark.parametrize("pair", [("sqlite", "json"), ("json", "dynamodb-http"), ("dynamodb-http", "sqlite")],
                         indirect=True, ids=["sqlite-to-json", "json-to-dynamodb", "dynamodb-to-sqlite"])
async def test_backend_to_backend_copies_records_exactly(pair, tmp_path, request):
    source, target = pair
    source_name = request.node.callspec.params["pair"][0]
    await fill(source)
    expected = await read_snapshot(source)
    await source.close()  # the migration opens it from its config, as the CLI does
    status, out = await run_migrate(target, config_for(tmp_path, source, source_name))
    assert status == 0, out
    assert await read_snapshot(target) == expected  # same ids, timestamps, versions
    status, out = await run_migrate(target, config_for(tmp_path, source, source_name))
    assert status == 0 and "(생성 0, 수정 0, 변경 없음 15, 건너뜀 0)" in out


@pytest.mark.parametrize("pair", [("dynamodb-http", "sqlite")], indirect=True)
async def test_a_dynamodb_source_over_a_megabyte_copies_completely(pair, tmp_path):
    source, target = pair
    await fill(source, departments=2, events=60, padding="가" * 4000)  # 1.4 MB in all
    await source.close()
    status, out = await run_migrate(target, config_for(tmp_path, source, "dynamodb-http"))
    assert status == 0, out
    assert "  • 이벤트: 120개 (원본 120개)" in out
    assert len((await read_snapshot(target)).events) == 120


@pytest.mark.parametrize("pair", [("sqlite", "memory")], indirect=True)
async def test_name_held_by_another_id_in_the_target_is_refused(pair, tmp_path):
    source, target = pair
    await fill(source, departments=1, events=1)
    await source.close()
    (await target.create_department("부서 0")).record
    status, out = await run_migrate(target, config_for(tmp_path, source, "sqlite"))
    assert status == 1 and "the target already has a department named '부서 0'" in out


async def test_failed_writes_are_not_reported_as_success(storage, legacy):
    async def refuse(records):
        from calsync.storage.errors import StorageUnavailable
        raise StorageUnavailable()

    storage.import_events = refuse
    status, out = await run_migrate(storage, legacy)
    assert status == 1 and "쓰기 실패 (storage_unavailable)" in out and "검증 완료" not in out


async def test_a_failed_read_back_is_a_failed_verification(storage, legacy):
    from calsync.storage.errors import StorageUnavailable

    async def gone(*args, **kwargs):  # the empty target needs no listing while planning
        raise StorageUnavailable()

    storage.list_events = gone
    status, out = await run_migrate(storage, legacy)
    assert status == 1 and "검증 실패 (storage_unavailable)" in out and "검증 완료" not in out


def test_cli_usage_errors(tmp_path):
    config = write_config(tmp_path, "storage:\n  backend: memory\n")
    result = run_cli("migrate", "--config", str(config))
    assert result.returncode == 2 and "--from" in result.stderr
    result = run_cli("migrate", "--from", str(tmp_path / "nowhere"), "--config", str(config))
    assert result.returncode == 2 and "no such folder" in result.stderr and "Traceback" not in result.stderr
    empty = tmp_path / "empty"
    empty.mkdir()
    result = run_cli("migrate", "--from", str(empty), "--config", str(config))
    assert result.returncode == 1 and "neither departments.json nor calendar_events.json" in result.stdout
