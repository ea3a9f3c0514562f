"""Where the counters live: in process (the embedded default) or in Redis (every process).

One operation admits a call — every frequency rate and every concurrency slot it is subject to,
all or nothing: a call refused by any limit counts in none and holds nothing. In Redis that is a
single Lua script (one round trip per call, whatever the number of limits), which also carries
the releases of calls that ended since the last one.
"""

import asyncio
import itertools
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from redis.asyncio import Redis

from apiforge.core.redis_line import RedisLine
from apiforge.traffic.concurrency import Slot
from apiforge.traffic.failure import RETRY_PAUSE_SECONDS, STORE_ERRORS
from apiforge.traffic.frequency import Rate, wait_ms, weighted_count

PRUNE_AT = 100_000  # in-process counters held before the expired ones are looked for
# At most this many in-process counters (about 300 bytes each: ~75 MB). Past it the least
# recently counted go first (`MemoryTraffic._evict`); normal traffic holds far fewer, as a
# counter lives only two windows (two minutes) after its last call.
MAX_WINDOWS = 250_000


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
        which limit refused it: of several full rates, the one with the longest wait, so a
        client retrying after it finds room in all of them (none fills up while no call comes)."""
        ...

    async def release(self, slots: Sequence[Slot], member: str) -> None: ...

    async def close(self) -> None:
        """Finish pending work at shutdown."""
        ...


class MemoryTraffic:
    """In-process counters. `admit` and `release` never await, so each runs atomically on the
    event loop; a few dictionary operations per limit.

    `windows` is kept in the order counters last counted a call (an admitted call moves its
    counters to the end), so the first ones are the least recently used: expired ones first,
    then those whose count matters least. At `max_windows` those go (`_evict`)."""

    shared = False

    def __init__(self, max_windows: int = MAX_WINDOWS) -> None:
        # key -> [window number, previous count, current count, window ms]
        self.windows: dict[str, list[int]] = {}
        self.active: dict[str, int] = {}
        self.prune_at = PRUNE_AT
        self.max_windows = max_windows

    async def admit(
        self, rates: Sequence[Rate], slots: Sequence[Slot], member: str
    ) -> Refusal | None:
        # The monotonic clock: these windows are this process's alone, so they need no common
        # epoch, and a wall clock set back (an NTP step) would leave every counter in a window
        # "from the future" that never turns, refusing calls for as long as the step.
        now_ms = time.monotonic() * 1000
        windows = self.windows
        counters = []
        refusal: Refusal | None = None
        for rate in rates:
            window_ms = rate.window * 1000
            number = int(now_ms // window_ms)
            counter = windows.get(rate.key)
            if counter is None or counter[0] < number - 1:
                # Kept only for an admitted call: refused calls from ever new client IPs would
                # otherwise fill the map with empty counters at any rate, for two windows each
                # (Redis stores nothing for a refused call either).
                counter = [number, 0, 0, window_ms]
            elif counter[0] == number - 1:  # the window turned: current becomes previous
                counter[0], counter[1], counter[2] = number, counter[2], 0
            elapsed = now_ms - number * window_ms
            previous, current = counter[1], counter[2]
            if weighted_count(previous, current, elapsed, window_ms) + 1 > rate.limit:
                wait = wait_ms(rate.limit, previous, current, elapsed, window_ms)
                if refusal is None or wait > refusal.retry_after_ms:
                    refusal = Refusal("frequency", rate.scope, rate.limit, wait, rate)
            counters.append(counter)
        if refusal is not None:
            return refusal
        active = self.active
        for slot in slots:
            if active.get(slot.key, 0) >= slot.limit:
                return Refusal("concurrency", slot.scope, slot.limit, 1000.0)
        for rate, counter in zip(rates, counters, strict=True):
            counter[2] += 1
            windows.pop(rate.key, None)  # to the end: the most recently used
            windows[rate.key] = counter
        for slot in slots:
            active[slot.key] = active.get(slot.key, 0) + 1
        if len(windows) > self.prune_at:
            self._prune(now_ms)
        if len(windows) > self.max_windows:
            self._evict()
        return None

    async def release(self, slots: Sequence[Slot], member: str) -> None:
        active = self.active
        for slot in slots:
            left = active.get(slot.key, 0) - 1
            if left > 0:
                active[slot.key] = left
            else:
                active.pop(slot.key, None)

    async def close(self) -> None:
        pass

    def _prune(self, now_ms: float) -> None:
        """Forget counters whose both windows are over (many client IPs come and go). The
        next look waits until the live ones have doubled: with more live counters than
        `PRUNE_AT` (a flood of client IPs), a scan of them all on every call would cost each
        call milliseconds; this way it costs each one O(1), amortised."""
        self.windows = {
            key: counter
            for key, counter in self.windows.items()
            if (counter[0] + 2) * counter[3] > now_ms
        }
        self.prune_at = max(PRUNE_AT, 2 * len(self.windows))

    def _evict(self) -> None:
        """Past `max_windows` (a flood from ever new addresses, which IPv6 /64s or a proxy's
        `X-Forwarded-For` make plentiful), forget the least recently used counters. Forgetting
        one can only let its client in sooner, so the order matters: a counter every admitted
        call touches (a busy key's, a plan's) is never near the front, and a client refused by
        its own counter gets it forgotten only after `max_windows` admitted calls on other
        counters, far more calls than the limit it would win back. Refusing new counters
        instead would lock every new client out for as long as the flood lasts.

        A tenth of the cap goes at once, in one pass: a dict keeps the slots of deleted entries
        until it resizes, and finding the first live entry scans past them, so deleting the
        first entry one call at a time would cost each call a scan of all deleted before it."""
        windows = self.windows
        keep = self.max_windows - self.max_windows // 10
        for key in list(itertools.islice(windows, len(windows) - keep)):
            del windows[key]


# KEYS: sorted sets with a lease to drop first (releases riding along), one hash per rate, one
# sorted set per slot. ARGV: number of releases, number of rates, lease ms, member, the released
# members, (limit, window ms) per rate, limit per slot. Redis's own clock times everything, so
# processes with skewed clocks agree. Returns {0} when admitted, {1, rate index, wait ms} (the
# full rate with the longest wait) or {2, slot index} when refused (nothing counted then; the
# releases are done either way). A release whose key cannot take it (another type: WRONGTYPE)
# is dropped, not raised: releases ride with other calls' admissions and are kept when one fails,
# so one such key would otherwise fail every admission of the process from then on.
ADMIT_LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local nrel = tonumber(ARGV[1])
local nrates = tonumber(ARGV[2])
local lease = tonumber(ARGV[3])
local member = ARGV[4]
for r = 1, nrel do
  redis.pcall('ZREM', KEYS[r], ARGV[4 + r])
end
local a = 4 + nrel
local fields = {}
local refused, longest = 0, -1
for i = 1, nrates do
  local key = KEYS[nrel + i]
  local limit = tonumber(ARGV[a + 2 * i - 1])
  local window = tonumber(ARGV[a + 2 * i])
  local number = math.floor(now / window)
  local counts = redis.call('HMGET', key, tostring(number - 1), tostring(number))
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
    if wait > longest then
      refused, longest = i, wait
    end
  end
  fields[i] = {number, window}
end
if refused > 0 then
  return {1, refused, math.ceil(longest)}
end
local b = a + 2 * nrates
local first = nrel + nrates
for j = 1, #KEYS - first do
  local key = KEYS[first + j]
  redis.call('ZREMRANGEBYSCORE', key, '-inf', now)
  if redis.call('ZCARD', key) >= tonumber(ARGV[b + j]) then
    return {2, j}
  end
end
for i = 1, nrates do
  local key, number, window = KEYS[nrel + i], fields[i][1], fields[i][2]
  redis.call('HINCRBY', key, tostring(number), 1)
  redis.call('HDEL', key, tostring(number - 2))
  redis.call('PEXPIRE', key, 2 * window)
end
for j = 1, #KEYS - first do
  redis.call('ZADD', KEYS[first + j], now + lease, member)
  redis.call('PEXPIRE', KEYS[first + j], lease)
end
return {0}
"""

# How long a release may wait for the next admission to carry it before it is sent alone.
RELEASE_DELAY_SECONDS = 0.002
MAX_RIDING_RELEASES = 256
MAX_PENDING_RELEASES = 10_000


class RedisTraffic:
    """Counters shared by every process. Admitting a call is one script; releasing its places
    rides along with this process's next admission (or goes alone within 2 ms when none comes),
    so under load a call costs one round trip in all. A release only ever arrives late, never
    early: a limit may briefly refuse a call it had room for, never admit one too many."""

    shared = True

    def __init__(self, redis: Redis, prefix: str, lease_seconds: int) -> None:
        self.redis = redis
        self.rate_prefix = f"{prefix}rate:"
        self.slot_prefix = f"{prefix}conc:"
        self.lease_ms = lease_seconds * 1000
        self.script = redis.register_script(ADMIT_LUA)
        # The admission, once per call, goes over a lean pipelined connection (core/redis_line.py);
        # redis-py's script only over TLS.
        self.line = RedisLine.for_client(redis)
        self.pending: list[tuple[str, str]] = []  # (sorted set, member) to release
        self.flush_timer: asyncio.TimerHandle | None = None
        self.closed = False
        self.flushes: set[asyncio.Task[None]] = set()

    async def admit(
        self, rates: Sequence[Rate], slots: Sequence[Slot], member: str
    ) -> Refusal | None:
        riding, self.pending = (
            self.pending[:MAX_RIDING_RELEASES],
            self.pending[MAX_RIDING_RELEASES:],
        )
        keys = [key for key, _ in riding]
        keys += [self.rate_prefix + rate.key for rate in rates]
        keys += [self.slot_prefix + slot.key for slot in slots]
        args: list[int | str] = [len(riding), len(rates), self.lease_ms, member]
        args += [released for _, released in riding]
        for rate in rates:
            args += [rate.limit, rate.window * 1000]
        args += [slot.limit for slot in slots]
        try:
            if self.line is not None:
                answer = await self.line.run_script(ADMIT_LUA, keys, args)
            else:
                answer = await self.script(keys=keys, args=args)
        except BaseException:
            self._keep(riding)  # maybe not sent: they ride with a later admission or flush
            # The script may have run (the call was cancelled as its client went away, or the
            # reply was lost): give back whatever places it took, lest they wait for the lease.
            self._queue_release(slots, member)
            raise
        if answer[0] == 0:
            return None
        if answer[0] == 1:
            rate = rates[int(answer[1]) - 1]
            return Refusal("frequency", rate.scope, rate.limit, float(answer[2]), rate)
        slot = slots[int(answer[1]) - 1]
        return Refusal("concurrency", slot.scope, slot.limit, 1000.0)

    async def release(self, slots: Sequence[Slot], member: str) -> None:
        self._queue_release(slots, member)

    def _queue_release(self, slots: Sequence[Slot], member: str) -> None:
        """The member's places, to ride with the next admission or go alone within 2 ms."""
        self.pending.extend((self.slot_prefix + slot.key, member) for slot in slots)
        self._flush_in(RELEASE_DELAY_SECONDS)

    def _flush_in(self, delay: float) -> None:
        """One flush at a time is scheduled (none once closed)."""
        if self.flush_timer is None and not self.closed:
            self.flush_timer = asyncio.get_running_loop().call_later(delay, self._flush_later)

    def _flush_later(self) -> None:
        self.flush_timer = None
        if self.pending:
            task = asyncio.get_running_loop().create_task(self.flush())
            self.flushes.add(task)
            task.add_done_callback(self.flushes.discard)

    async def flush(self) -> None:
        """Send the releases no admission has carried; kept if Redis is unreachable and sent
        again after the failure pause (a call ending in a blip, with none after it on this
        server, would otherwise hold its places in Redis for the whole lease).
        On the admissions' own line (the script, admitting nothing): Redis applies them before
        any admission this process sends afterwards, so a place given back before a call is
        admitted is free for it (over another connection the call could arrive first)."""
        pending, self.pending = self.pending, []
        if not pending:
            return
        try:
            if self.line is not None:
                keys = [key for key, _ in pending]
                args: list[int | str] = [len(pending), 0, self.lease_ms, ""]
                await self.line.run_script(ADMIT_LUA, keys, args + [m for _, m in pending])
                return
            async with self.redis.pipeline(transaction=False) as pipe:
                for key, member in pending:
                    pipe.zrem(key, member)
                # An error reply (a key of another type) drops its release, as `redis.pcall`
                # does in the script; a lost connection still raises and keeps them all.
                await pipe.execute(raise_on_error=False)
        except STORE_ERRORS:
            self._keep(pending)
            self._flush_in(RETRY_PAUSE_SECONDS)

    def _keep(self, releases: list[tuple[str, str]]) -> None:
        """Put unsent releases back, up to a bound: during a long outage the oldest are
        dropped and their leases expire by themselves."""
        self.pending = (releases + self.pending)[-MAX_PENDING_RELEASES:]

    async def close(self) -> None:
        """Send what is pending (at shutdown); what Redis cannot take then is left to its
        lease."""
        self.closed = True
        if self.flush_timer is not None:
            self.flush_timer.cancel()
            self.flush_timer = None
        await self.flush()
        if self.flushes:
            await asyncio.gather(*self.flushes, return_exceptions=True)
        if self.line is not None:
            await self.line.close()

    async def in_flight(self, key: str) -> int:
        """Live leases of one slot counter (expired ones are not counted): tests, operators."""
        now_s, now_us = await self.redis.time()
        now_ms = now_s * 1000 + now_us // 1000
        return int(await self.redis.zcount(self.slot_prefix + key, f"({now_ms}", "+inf"))
