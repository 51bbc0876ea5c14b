"""Benchmark: `calsync migrate` of the original JSON files, records per second.

Writes a legacy `departments.json` and `calendar_events.json` with --events events spread
over --departments departments, then times `calsync migrate --from FOLDER --quiet` (reading,
checking, writing and verifying) into SQLite and into DynamoDB served by moto's server over
HTTP (a separate `moto_server` process on a loopback port).

    .venv/bin/python tests/bench/bench_migrate.py --events 100000

Figures, not a test: nothing here passes or fails.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path


def write_legacy(folder: Path, departments: int, events: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "departments.json").write_text(json.dumps(
        {"departments": [{"id": d, "name": f"부서 {d}", "description": "벤치마크"} for d in range(1, departments + 1)]},
        ensure_ascii=False))
    by_date: dict[str, list] = {}
    for i in range(events):
        date = f"{2020 + i % 5}-{1 + i % 12:02d}-{1 + i % 28:02d}"
        by_date.setdefault(date, []).append({
            "Id": i, "Title": f"일정 {i}", "Description": "주간 회의와 메모" * 4, "Time": "오후 2:00",
            "Url": "https://example.com", "LastModified": "2024-01-15T10:30:00Z", "DepartmentId": 1 + i % departments,
        })
    (folder / "calendar_events.json").write_text(json.dumps(by_date, ensure_ascii=False))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def time_migrate(config: Path, legacy: Path, env: dict) -> tuple[float, float]:
    """Wall-clock seconds of the whole command, and the CPU seconds calsync itself used."""
    cpu_before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    result = subprocess.run([sys.executable, "-m", "calsync", "migrate", "--from", str(legacy), "--config", str(config),
                             "--quiet"], capture_output=True, text=True, env=env)
    elapsed = time.perf_counter() - started
    cpu_after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if result.returncode != 0:
        raise SystemExit(f"migrate failed:\n{result.stdout}\n{result.stderr}")
    cpu = (cpu_after.ru_utime - cpu_before.ru_utime) + (cpu_after.ru_stime - cpu_before.ru_stime)
    return elapsed, cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--departments", type=int, default=20)
    parser.add_argument("--targets", default="sqlite,dynamodb")
    args = parser.parse_args()
    records = args.events + args.departments
    env = {**os.environ, "AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench", "AWS_REGION": "ap-northeast-2"}

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        write_legacy(folder / "legacy", args.departments, args.events)
        if "sqlite" in args.targets:
            config = folder / "sqlite.yaml"
            config.write_text("storage:\n  backend: sqlite\n")
            first, cpu = time_migrate(config, folder / "legacy", env)
            again, _ = time_migrate(config, folder / "legacy", env)
            print(f"sqlite: {records} records in {first:.1f} s = {records / first:.0f} records/s"
                  f" (calsync CPU {cpu:.1f} s); rerun (nothing to write) {again:.1f} s")
        if "dynamodb" in args.targets:
            port = free_port()
            moto = subprocess.Popen([str(Path(sys.executable).with_name("moto_server")), "-H", "127.0.0.1", "-p",
                                     str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            try:
                for _ in range(100):
                    try:
                        urllib.request.urlopen(f"http://127.0.0.1:{port}/moto-api/", timeout=1)
                        break
                    except OSError:
                        time.sleep(0.1)
                config = folder / "dynamodb.yaml"
                # moto answers a Query by scanning the whole table, so its pages take seconds at 100k items
                config.write_text(f"storage:\n  backend: dynamodb\n  dynamodb:\n    endpoint_url: http://127.0.0.1:{port}\n"
                                  "    timeout_seconds: 120\n")
                subprocess.run([sys.executable, "-m", "calsync", "create-tables", "--config", str(config)], check=True,
                               capture_output=True, env=env)
                first, cpu = time_migrate(config, folder / "legacy", env)
                print(f"dynamodb (moto server over HTTP): {records} records in {first:.1f} s ="
                      f" {records / first:.0f} records/s; calsync itself used {cpu:.1f} s of CPU"
                      f" ({records / cpu:.0f} records per CPU-second), the rest is moto")
            finally:
                moto.terminate()
                moto.wait()


if __name__ == "__main__":
    main()
