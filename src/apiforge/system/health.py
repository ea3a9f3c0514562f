"""Liveness and readiness: is the process up, and can it reach what a request needs?

Checks run concurrently, each under its own time limit, so a hung dependency answers 503 within
seconds instead of holding the probe until the load balancer gives up. Failure details (which may
name hosts) go to the log; the unauthenticated response only names the failing check.
At start, a Redis that may evict keys is named in the log (`warn_if_redis_evicts`).
"""

import asyncio
from collections.abc import Awaitable

import structlog
from redis.asyncio import Redis
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from apiforge.core.errors import UnavailableError

CHECK_TIMEOUT_SECONDS = 3.0
OK, DISABLED, FAILED, TIMEOUT = "ok", "disabled", "failed", "timeout"

log = structlog.get_logger("apiforge.health")


async def _database(engine: AsyncEngine) -> None:
    async with engine.connect() as connection:
        await connection.execute(text("SELECT 1"))


async def _guarded(name: str, check: Awaitable[object]) -> str:
    try:
        async with asyncio.timeout(CHECK_TIMEOUT_SECONDS):
            await check
    except TimeoutError:
        log.warning("readiness_check_timeout", check=name, seconds=CHECK_TIMEOUT_SECONDS)
        return TIMEOUT
    except Exception as exc:
        log.warning("readiness_check_failed", check=name, error=f"{type(exc).__name__}: {exc}")
        return FAILED
    return OK


class HealthService:
    def __init__(self, engine: AsyncEngine, redis: "Redis | None") -> None:
        self.engine = engine
        self.redis = redis

    async def readiness(self) -> dict[str, str]:
        """`{"database": "ok", "redis": "ok"|"disabled"}`, or 503 `not_ready` naming the failures.

        Redis is checked only when configured: the embedded default runs without it.
        """
        database = _guarded("database", _database(self.engine))
        if self.redis is None:
            checks = {"database": await database, "redis": DISABLED}
        else:
            results = await asyncio.gather(database, _guarded("redis", self.redis.ping()))
            checks = dict(zip(("database", "redis"), results, strict=True))
        failing = [name for name, status in checks.items() if status not in (OK, DISABLED)]
        if failing:
            raise UnavailableError(
                f"Not ready: {', '.join(failing)}", reason="not_ready", details={"checks": checks}
            )
        return checks


async def warn_if_redis_evicts(redis: "Redis | None") -> None:
    """Log `redis_may_evict` when Redis has a memory limit and a policy other than `noeviction`:
    it would then drop live keys (a signed call's nonce, a concurrency lease, a window) and
    quietly break what they guarantee (docs/traffic.md). Once, at start; silent when Redis is
    unreachable (readiness says so) or refuses `CONFIG` (managed Redis often does)."""
    if redis is None:
        return
    try:
        async with asyncio.timeout(CHECK_TIMEOUT_SECONDS):
            config = await redis.config_get("maxmemory*")
    except Exception:  # an advisory check never stops a start
        return
    policy = str(config.get("maxmemory-policy", "noeviction"))
    if policy != "noeviction" and str(config.get("maxmemory", "0")) != "0":
        log.warning("redis_may_evict", policy=policy, maxmemory=config.get("maxmemory"))
