"""Where the counters live: in process (the embedded default) or in Redis (every process).

One operation admits a call — every frequency rate and every concurrency slot it is subject to,
all or nothing: a call refused by any limit counts in none and holds nothing. In Redis that is a
single Lua script (one round trip per call, whatever the number of limits), and releasing the
call's places is one more (a pipeline of ZREMs).
"""

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from redis.asyncio import Redis

from apiforge.traffic.concurrency import Slot
from apiforge.traffic.frequency import Rate, wait_ms, weighted_count


@dataclass(frozen=True, slots=True)
class Refusal:
    kind: str  # frequency | concurrency
    scope: str
    limit: int
    retry_after_ms: float
    rate: Rate | None = None  # the full rate, for a frequency refusal


class TrafficStore(Protocol):
    shared: bool  # True: counters are shared by every process (Redis)

    async def admit(
        self, rates: Sequence[Rate], slots: Sequence[Slot], member: str
    ) -> Refusal | None:
        """Count the call in every rate and take a place in every slot, or do neither and say
        which limit refused it."""
        ...

    async def release(self, slots: Sequence[Slot], member: str) -> None: ...


class MemoryTraffic:
    """In-process counters. `admit` and `release` never await, so each runs atomically on the
    event loop; a few dictionary operations per limit."""

    shared = False

    def __init__(self) -> None:
        # key -> [window number, previous count, current count, window ms]
        self.windows: dict[str, list[int]] = {}
        self.active: dict[str, int] = {}

    async def admit(
        self, rates: Sequence[Rate], slots: Sequence[Slot], member: str
    ) -> Refusal | None:
        now_ms = time.time() * 1000
        counters = []
        for rate in rates:
            window_ms = rate.window * 1000
            number = int(now_ms // window_ms)
            counter = self.windows.get(rate.key)
            if counter is None or counter[0] < number - 1:
                counter = [number, 0, 0, window_ms]
                self.windows[rate.key] = counter
            elif counter[0] == number - 1:  # the window turned: current becomes previous
                counter[0], counter[1], counter[2] = number, counter[2], 0
            elapsed = now_ms - number * window_ms
            previous, current = counter[1], counter[2]
            if weighted_count(previous, current, elapsed, window_ms) + 1 > rate.limit:
                wait = wait_ms(rate.limit, previous, current, elapsed, window_ms)
                return Refusal("frequency", rate.scope, rate.limit, wait, rate)
            counters.append(counter)
        active = self.active
        for slot in slots:
            if active.get(slot.key, 0) >= slot.limit:
                return Refusal("concurrency", slot.scope, slot.limit, 1000.0)
        for counter in counters:
            counter[2] += 1
        for slot in slots:
            active[slot.key] = active.get(slot.key, 0) + 1
        if len(self.windows) > 100_000:
            self._prune(now_ms)
        return None

    async def release(self, slots: Sequence[Slot], member: str) -> None:
        active = self.active
        for slot in slots:
            left = active.get(slot.key, 0) - 1
            if left > 0:
                active[slot.key] = left
            else:
                active.pop(slot.key, None)

    def _prune(self, now_ms: float) -> None:
        """Forget counters whose both windows are over (many client IPs come and go)."""
        self.windows = {
            key: counter
            for key, counter in self.windows.items()
            if (counter[0] + 2) * counter[3] > now_ms
        }


# KEYS: one hash per rate, then one sorted set per slot.
# ARGV: number of rates, lease ms, member, then (limit, window ms) per rate, then limit per slot.
# Redis's own clock times everything, so processes with skewed clocks agree. Returns {0} when
# admitted, {1, rate index, wait ms} or {2, slot index} when refused (nothing counted then).
ADMIT_LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local nrates = tonumber(ARGV[1])
local lease = tonumber(ARGV[2])
local member = ARGV[3]
local fields = {}
for i = 1, nrates do
  local limit = tonumber(ARGV[2 + 2 * i])
  local window = tonumber(ARGV[3 + 2 * i])
  local number = math.floor(now / window)
  local counts = redis.call('HMGET', KEYS[i], tostring(number - 1), tostring(number))
  local previous = tonumber(counts[1]) or 0
  local current = tonumber(counts[2]) or 0
  local elapsed = now - number * window
  if previous * (1 - elapsed / window) + current + 1 > limit then
    local room = limit - 1
    local wait
    if current <= room and previous > 0 then
      wait = math.max(0, window * (1 - (room - current) / previous) - elapsed)
    elseif current > 0 then
      wait = window - elapsed + window * (1 - room / current)
    else
      wait = window - elapsed
    end
    return {1, i, math.ceil(wait)}
  end
  fields[i] = {number, window}
end
local first_slot = 4 + 2 * nrates
for j = nrates + 1, #KEYS do
  redis.call('ZREMRANGEBYSCORE', KEYS[j], '-inf', now)
  if redis.call('ZCARD', KEYS[j]) >= tonumber(ARGV[first_slot + j - nrates - 1]) then
    return {2, j - nrates}
  end
end
for i = 1, nrates do
  local number, window = fields[i][1], fields[i][2]
  redis.call('HINCRBY', KEYS[i], tostring(number), 1)
  redis.call('HDEL', KEYS[i], tostring(number - 2))
  redis.call('PEXPIRE', KEYS[i], 2 * window)
end
for j = nrates + 1, #KEYS do
  redis.call('ZADD', KEYS[j], now + lease, member)
  redis.call('PEXPIRE', KEYS[j], lease)
end
return {0}
"""


class RedisTraffic:
    """Counters shared by every process: one script to admit, one pipeline to release."""

    shared = True

    def __init__(self, redis: Redis, prefix: str, lease_seconds: int) -> None:
        self.redis = redis
        self.rate_prefix = f"{prefix}rate:"
        self.slot_prefix = f"{prefix}conc:"
        self.lease_ms = lease_seconds * 1000
        self.script = redis.register_script(ADMIT_LUA)

    async def admit(
        self, rates: Sequence[Rate], slots: Sequence[Slot], member: str
    ) -> Refusal | None:
        keys = [self.rate_prefix + rate.key for rate in rates]
        keys += [self.slot_prefix + slot.key for slot in slots]
        args: list[int | str] = [len(rates), self.lease_ms, member]
        for rate in rates:
            args += [rate.limit, rate.window * 1000]
        args += [slot.limit for slot in slots]
        answer = await self.script(keys=keys, args=args)
        if answer[0] == 0:
            return None
        if answer[0] == 1:
            rate = rates[int(answer[1]) - 1]
            return Refusal("frequency", rate.scope, rate.limit, float(answer[2]), rate)
        slot = slots[int(answer[1]) - 1]
        return Refusal("concurrency", slot.scope, slot.limit, 1000.0)

    async def release(self, slots: Sequence[Slot], member: str) -> None:
        async with self.redis.pipeline(transaction=False) as pipe:
            for slot in slots:
                pipe.zrem(self.slot_prefix + slot.key, member)
            await pipe.execute()

    async def in_flight(self, key: str) -> int:
        """Live leases of one slot counter (expired ones are not counted): tests, operators."""
        now_s, now_us = await self.redis.time()
        now_ms = now_s * 1000 + now_us // 1000
        return int(await self.redis.zcount(self.slot_prefix + key, f"({now_ms}", "+inf"))
