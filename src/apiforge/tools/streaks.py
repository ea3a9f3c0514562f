"""The log of a periodic background task that fails round after round (a database outage)."""

import sys
from typing import Any


class FailureStreak:
    """Logs a streak of failures once in full: its first failure as `event` with the traceback,
    later ones as a one-line warning with the streak's length (a flusher failing every 15 s
    while the database is down must not fill the log with tracebacks), and one `recovered`
    warning when a round succeeds again (at the failures' level: whoever sees them sees the
    end). Call `failed` inside the `except` block."""

    __slots__ = ("event", "failures", "log", "recovered")

    def __init__(self, log: Any, event: str, recovered: str) -> None:
        self.log = log
        self.event = event
        self.recovered = recovered
        self.failures = 0

    def failed(self, **fields: Any) -> None:
        self.failures += 1
        if self.failures == 1:
            self.log.exception(self.event, **fields)
        else:
            error = repr(sys.exc_info()[1])[:300]
            self.log.warning(self.event, failures=self.failures, error=error, **fields)

    def succeeded(self) -> None:
        if self.failures:
            self.log.warning(self.recovered, failures=self.failures)
            self.failures = 0
