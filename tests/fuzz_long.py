"""The long fuzz run: `python -m tests.fuzz_long [--inputs 100000] [--seed N]`.

The same hostile REST requests and WebSocket frames as the suite's bounded run, many more
of them, against one live server. Prints how many inputs were tried and how many failed;
on a failure, prints the input and the broken promise and exits 1.
"""
from __future__ import annotations

import argparse
import logging
import sys
import time

from hypothesis import HealthCheck, Phase, given, seed, settings

from tests.fuzzing import FRAMES, FuzzServer, WsFuzzer, fuzz_request, requests


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--inputs", type=int, default=100_000, help="inputs in all, half REST and half WebSocket")
    parser.add_argument("--seed", type=int, default=int(time.time()))
    args = parser.parse_args()
    logging.basicConfig(level=logging.CRITICAL)  # a refused input is logged by design; only the outcome matters here
    logging.getLogger("tornado.application").setLevel(logging.ERROR)  # but a bug's traceback is shown
    server = FuzzServer()
    ws = WsFuzzer(server)
    tried = {"rest": 0, "ws": 0}
    statuses: dict[int, int] = {}
    quick = settings(max_examples=args.inputs // 2, deadline=None, phases=[Phase.generate], database=None,
                     suppress_health_check=list(HealthCheck))

    @seed(args.seed)
    @quick
    @given(requests())
    def rest(request) -> None:
        tried["rest"] += 1
        try:
            status = fuzz_request(server, request)
        except Exception:
            print(f"failing request: {request!r:.2000}", file=sys.stderr)
            raise
        statuses[status] = statuses.get(status, 0) + 1

    @seed(args.seed)
    @quick
    @given(FRAMES)
    def frames(frame) -> None:
        tried["ws"] += 1
        try:
            ws.send(frame)
        except Exception:
            print(f"failing frame: {frame!r:.2000}", file=sys.stderr)
            raise

    started = time.monotonic()
    failures = 0
    for run in (rest, frames):
        try:
            run()
        except Exception as exc:  # the broken promise, with hypothesis's falsifying input above it
            failures += 1
            print(f"FAILED in {run.__name__}: {exc!r}", file=sys.stderr)
    elapsed = time.monotonic() - started
    ws.close()
    server.close()
    print(f"seed {args.seed}: {tried['rest'] + tried['ws']} inputs tried ({tried['rest']} REST requests,"
          f" {tried['ws']} WebSocket frames) in {elapsed:.0f} s; failures: {failures}")
    print("REST statuses: " + ", ".join(f"{s}×{n}" for s, n in sorted(statuses.items())))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
