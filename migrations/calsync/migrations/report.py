"""Migration output in the style of the original script: headers, a ✓ line per record (or a
progress bar for large inputs), totals, and the verification lines."""
from __future__ import annotations

import sys
from typing import TextIO

from calsync.migrations.plan import Step

RULE = "=" * 50
PROGRESS_ABOVE = 300  # records in a section before the bar replaces one line per record
OUTCOME_WORDS = {"created": "생성", "updated": "수정", "unchanged": "변경 없음"}


class Reporter:
    def __init__(self, out: TextIO = sys.stdout, quiet: bool = False, dry_run: bool = False) -> None:
        self.out = out
        self.quiet = quiet
        self.dry_run = dry_run
        self._total = 0
        self._shown = -1

    def line(self, text: str = "") -> None:
        if not self.quiet:
            print(text, file=self.out, flush=True)

    def always(self, text: str) -> None:
        """For what a script must see even with --quiet: the outcome and every problem."""
        print(text, file=self.out, flush=True)

    def banner(self, title: str) -> None:
        self.line(RULE)
        self.line(title)
        self.line(RULE)

    def start_section(self, header: str, total: int) -> None:
        self.line()
        self.line(header)
        self._total, self._shown = total, -1

    def record(self, step: Step, done: int) -> None:
        """One record handled: its ✓ line, or the progress bar moves on."""
        if self._total > PROGRESS_ABOVE:
            self._progress(done)
        elif self.dry_run:
            planned = "" if step.outcome == "unchanged" else " 예정"
            self.line(f"  • {step.label}: {OUTCOME_WORDS[step.outcome]}{planned}")
        else:
            state = "마이그레이션 완료" if step.outcome != "unchanged" else "변경 없음"
            self.line(f"  ✓ {step.label} {state}")

    def _progress(self, done: int) -> None:
        percent = done * 100 // self._total
        interactive = self.out.isatty()
        if percent == self._shown or (not interactive and percent % 10 and done != self._total):
            return
        self._shown = percent
        filled = percent // 5
        bar = f"  [{'#' * filled}{'-' * (20 - filled)}] {percent:3d}% {done}/{self._total}"
        if interactive:
            if not self.quiet:
                print("\r" + bar, end="\n" if done == self._total else "", file=self.out, flush=True)
        else:
            self.line(bar)

    def totals(self, text: str, counts: dict[str, int], skipped: int = 0) -> None:
        parts = ", ".join(f"{OUTCOME_WORDS[k]} {v}" for k, v in counts.items())
        self.line(f"{text}: {sum(counts.values())}개 ({parts}, 건너뜀 {skipped})")
