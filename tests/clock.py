"""A clock tests move by hand: storage reads wall time only through `Storage.clock`."""
from __future__ import annotations


class ManualClock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds
