"""The in-process nonce store of signed calls stays within its caps however many distinct nonces
arrive, refusing new ones rather than forgetting live ones (which would allow a replay)."""

from pathlib import Path

import pytest

from apiforge.core.errors import RateLimitedError, UnavailableError
from apiforge.gateway.signing import MAX_NONCES, MAX_NONCES_PER_KEY, MemoryNonceStore

TTL = 662


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_one_key_flooding_distinct_nonces_stays_under_its_cap() -> None:
    clock = FakeClock()
    store = MemoryNonceStore(clock, capacity=50_000, per_key=5_000)
    refusals: list[RateLimitedError] = []
    for n in range(50_000):
        clock.now += 0.001  # 50 s in all: every nonce is still live
        try:
            assert await store.claim(f"key-a:nonce-{n:012d}", TTL)
        except RateLimitedError as exc:
            refusals.append(exc)
    assert len(refusals) == 45_000
    assert {exc.reason for exc in refusals} == {"too_many_nonces"}
    assert all(1 <= int(exc.headers["Retry-After"]) <= TTL for exc in refusals)
    assert len(store) == 5_000
    # Full, a replay is still a replay, never taken for a fresh nonce...
    assert not await store.claim("key-a:nonce-000000000000", TTL)
    # ...and another key still signs.
    assert await store.claim("key-b:nonce-000000000000", TTL)
    # Once the key's nonces expire, it signs again, and nothing of the flood is left.
    clock.now += TTL
    assert await store.claim("key-a:nonce-fresh-000001", TTL)
    assert len(store) == 1


async def test_many_keys_stay_under_the_process_cap() -> None:
    clock = FakeClock()
    store = MemoryNonceStore(clock, capacity=10_000, per_key=100)
    refusals: list[UnavailableError] = []
    for n in range(30_000):
        try:
            assert await store.claim(f"key-{n}:nonce-0000000000000000", TTL)
        except UnavailableError as exc:
            refusals.append(exc)
    assert len(refusals) == 20_000
    assert {(exc.status, exc.reason) for exc in refusals} == {(503, "nonce_store_full")}
    assert {exc.headers["Retry-After"] for exc in refusals} == {str(TTL)}
    assert len(store) == 10_000
    assert not await store.claim("key-0:nonce-0000000000000000", TTL)  # still a replay
    clock.now += TTL
    assert await store.claim("key-x:nonce-0000000000000000", TTL)
    assert len(store) == 1
    # No count is left behind for keys gone quiet.
    assert {owner: len(held) for owner, held in store._held.items()} == {"key-x": 1}


async def test_restored_nonces_count_against_their_keys(tmp_path: Path) -> None:
    clock, wall = FakeClock(), FakeClock()
    before = MemoryNonceStore(clock, wall, per_key=2)
    assert await before.claim("k:nonce-0000000000000001", TTL)
    assert await before.claim("k:nonce-0000000000000002", TTL)
    path = tmp_path / "nonces.json"
    before.save(path)
    after = MemoryNonceStore(clock, wall, per_key=2)
    after.restore(path)
    with pytest.raises(RateLimitedError):
        await after.claim("k:nonce-0000000000000003", TTL)


def test_the_documented_caps() -> None:
    assert (MAX_NONCES, MAX_NONCES_PER_KEY) == (1_000_000, 250_000)
