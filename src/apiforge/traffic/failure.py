"""What a limit does when its shared store (Redis) is unreachable: fail open or fail closed.

A call never turns into a 500 because Redis is down. Each decision taken without the store is
counted (`apiforge_limit_degraded_total`); the log says once when the store goes away and once
when it is back, not on every call. After a failure the store is left alone for a short pause,
so an outage costs calls nothing (no connection attempt each time) and recovery is noticed
within that pause.
"""

import time
from typing import Literal

import structlog
from limits.errors import StorageError
from redis.exceptions import RedisError

from apiforge.core.errors import ApiforgeError
from apiforge.http.metrics import LIMIT_DEGRADED

FailureMode = Literal["open", "closed"]
RETRY_PAUSE_SECONDS = 1.0
log = structlog.get_logger("apiforge.traffic")

# What a store failure looks like through redis-py and `limits` (which re-raises redis errors,
# or wraps them in StorageError when told to); OS errors for sockets that fail below redis-py.
STORE_ERRORS: tuple[type[BaseException], ...] = (RedisError, StorageError, OSError, TimeoutError)


class LimitsUnavailableError(ApiforgeError):
    """503 for a limit configured to fail closed while its store is unreachable."""

    status = 503
    reason = "limits_unavailable"
    message = "Traffic limits cannot be checked right now; retry shortly"

    def __init__(self, kind: str) -> None:
        super().__init__(details={"limit": kind}, headers={"Retry-After": "1"})


class StoreHealth:
    """The shared store's availability as this process last saw it (one per process)."""

    def __init__(self) -> None:
        self.down_until = 0.0
        self.down = False

    def usable(self) -> bool:
        """False during the pause after a failure: callers take their failure mode at once."""
        return not self.down or time.monotonic() >= self.down_until

    def failed(self, exc: BaseException) -> None:
        self.down_until = time.monotonic() + RETRY_PAUSE_SECONDS
        if not self.down:
            self.down = True
            log.warning("traffic store unavailable", error=repr(exc)[:300])

    def succeeded(self) -> None:
        if self.down:
            self.down = False
            log.warning("traffic store recovered")

    def degrade(self, kind: str, mode: FailureMode) -> None:
        """Record a decision taken without the store; raise the 503 when `mode` is closed."""
        LIMIT_DEGRADED.labels(kind, mode).inc()
        if mode == "closed":
            raise LimitsUnavailableError(kind)
