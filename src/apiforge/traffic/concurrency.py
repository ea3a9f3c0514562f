"""Concurrency limits: how many calls may be in flight at once per counter (a caller key, an
app, a workspace's plan), Dify's `max_active_requests` done atomically.

With Redis each counter is a sorted set of leases, one member per call scored by its expiry
(APISIX limit-conn's design): one Lua script drops expired leases, checks every counter of the
call and, only when all have room, adds the call's lease to each. A process that dies mid-call
leaks its leases for at most the lease time; every other path releases in the gateway's
`finally`. Without Redis the same rule runs on in-process integers (nothing can leak there:
the process that holds a slot is the one that releases it).
"""

import itertools
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from redis.asyncio import Redis


@dataclass(frozen=True, slots=True)
class Slot:
    """One counter a call occupies while it runs: `scope` names the limit (key, app, plan)."""

    scope: str
    key: str
    limit: int


class ConcurrencyStore(Protocol):
    shared: bool  # True: counters are shared by every process (Redis)

    async def acquire(self, slots: Sequence[Slot], member: str) -> Slot | None:
        """Take a place in every slot, or in none: the first full slot, else None."""
        ...

    async def release(self, slots: Sequence[Slot], member: str) -> None: ...


class MemoryConcurrency:
    """In-process counters: acquire and release never await, so they are atomic in the loop."""

    shared = False

    def __init__(self) -> None:
        self.active: dict[str, int] = {}

    async def acquire(self, slots: Sequence[Slot], member: str) -> Slot | None:
        active = self.active
        for slot in slots:
            if active.get(slot.key, 0) >= slot.limit:
                return slot
        for slot in slots:
            active[slot.key] = active.get(slot.key, 0) + 1
        return None

    async def release(self, slots: Sequence[Slot], member: str) -> None:
        active = self.active
        for slot in slots:
            left = active.get(slot.key, 0) - 1
            if left > 0:
                active[slot.key] = left
            else:
                active.pop(slot.key, None)


# KEYS: the counters; ARGV: lease in ms, the call's member, then each counter's limit.
# Redis's own clock scores the leases, so processes with skewed clocks agree on expiry.
ACQUIRE_LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local lease = tonumber(ARGV[1])
for i, key in ipairs(KEYS) do
  redis.call('ZREMRANGEBYSCORE', key, '-inf', now)
  if redis.call('ZCARD', key) >= tonumber(ARGV[i + 2]) then
    return i
  end
end
for _, key in ipairs(KEYS) do
  redis.call('ZADD', key, now + lease, ARGV[2])
  redis.call('PEXPIRE', key, lease)
end
return 0
"""


class RedisConcurrency:
    """Counters shared by every process through Redis: one round trip to acquire (the script),
    one to release (a pipeline of ZREMs)."""

    shared = True

    def __init__(self, redis: Redis, prefix: str, lease_seconds: int) -> None:
        self.redis = redis
        self.prefix = f"{prefix}conc:"
        self.lease_ms = lease_seconds * 1000
        self.script = redis.register_script(ACQUIRE_LUA)

    async def acquire(self, slots: Sequence[Slot], member: str) -> Slot | None:
        keys = [self.prefix + slot.key for slot in slots]
        args: list[int | str] = [self.lease_ms, member, *(slot.limit for slot in slots)]
        full = int(await self.script(keys=keys, args=args))
        return slots[full - 1] if full else None

    async def release(self, slots: Sequence[Slot], member: str) -> None:
        async with self.redis.pipeline(transaction=False) as pipe:
            for slot in slots:
                pipe.zrem(self.prefix + slot.key, member)
            await pipe.execute()

    async def in_flight(self, key: str) -> int:
        """Live leases of one counter (expired ones are not counted): for tests and operators."""
        now_s, now_us = await self.redis.time()
        now_ms = now_s * 1000 + now_us // 1000
        return int(await self.redis.zcount(self.prefix + key, f"({now_ms}", "+inf"))


_PROCESS = secrets.token_hex(6)
_sequence = itertools.count(1)


def new_member() -> str:
    """A lease id unique across processes (request ids come from clients and may repeat)."""
    return f"{_PROCESS}:{next(_sequence)}"
