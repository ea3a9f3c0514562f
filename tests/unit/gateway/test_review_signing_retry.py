"""A key past its share of the in-process nonces is told to retry when *its* oldest live nonce
expires, not the process's oldest (another key's, which may expire long before): its retry at
the time given is then taken."""

from pathlib import Path

import pytest

from apiforge.core.errors import RateLimitedError
from apiforge.gateway.signing import MemoryNonceStore

TTL = 300


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_retry_after_is_until_the_key_s_own_oldest_nonce_expires() -> None:
    clock = FakeClock()
    store = MemoryNonceStore(clock, per_key=2)
    assert await store.claim("other:nonce-0000000000000001", TTL)  # expires at 1300
    clock.now += 100
    assert await store.claim("busy:nonce-0000000000000001", TTL)  # expires at 1400
    clock.now += 50
    assert await store.claim("busy:nonce-0000000000000002", TTL)  # expires at 1450
    clock.now += 0.5
    with pytest.raises(RateLimitedError) as refused:
        await store.claim("busy:nonce-0000000000000003", TTL)
    wait = int(refused.value.headers["Retry-After"])
    assert wait == 250  # 1400 - 1150.5, rounded up; not the other key's 150
    clock.now += wait - 1
    with pytest.raises(RateLimitedError):  # a second early: still full
        await store.claim("busy:nonce-0000000000000003", TTL)
    clock.now += 1
    assert await store.claim("busy:nonce-0000000000000003", TTL)  # taken at the time given
    # Its next oldest is the one claimed at 1150: the next refusal waits for that one.
    with pytest.raises(RateLimitedError) as refused:
        await store.claim("busy:nonce-0000000000000004", TTL)
    assert int(refused.value.headers["Retry-After"]) == 50


async def test_a_restored_key_waits_for_its_own_oldest_nonce(tmp_path: Path) -> None:
    clock, wall = FakeClock(), FakeClock()
    before = MemoryNonceStore(clock, wall, per_key=1)
    assert await before.claim("other:nonce-0000000000000001", TTL)
    clock.now += 200
    assert await before.claim("busy:nonce-0000000000000001", TTL)  # 300 s left
    path = tmp_path / "nonces.json"
    before.save(path)
    after = MemoryNonceStore(clock, wall, per_key=1)
    after.restore(path)
    with pytest.raises(RateLimitedError) as refused:
        await after.claim("busy:nonce-0000000000000002", TTL)
    assert int(refused.value.headers["Retry-After"]) == TTL  # not the other key's 100
