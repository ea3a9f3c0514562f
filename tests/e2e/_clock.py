"""A UTC wall clock tests move by hand, frozen where the quota meter, the request log and the
monthly counts read it (`utcnow` in each module named, and the meter's `time.time()` that tells
it a month has ended); monotonic time keeps running, so caches still age."""

import time
from collections.abc import Iterable
from datetime import datetime
from types import SimpleNamespace

import pytest


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def utcnow(self) -> datetime:
        return self.now

    def time(self) -> float:
        return self.now.timestamp()


def frozen_clock(monkeypatch: pytest.MonkeyPatch, modules: Iterable[str], now: datetime) -> Clock:
    """A `Clock` at `now`, read by `utcnow` in each of `modules` and by the quota meter."""
    clock = Clock(now)
    for module in modules:
        monkeypatch.setattr(f"{module}.utcnow", clock.utcnow)
    monkeypatch.setattr(
        "apiforge.plans.meter.time", SimpleNamespace(time=clock.time, monotonic=time.monotonic)
    )
    return clock
