"""The sign-in throttle on both storages `core/shared.py` builds (in process, and Redis when the
suite runs with services): reserving is atomic, and giving back removes exactly one entry —
which reaches into `limits`' storage layout, so an upgrade that changes it fails here."""

import asyncio
from collections.abc import AsyncIterator

import pytest
from limits.aio.storage import MemoryStorage, Storage

from apiforge.accounts.throttle import LoginThrottle
from apiforge.core.errors import RateLimitedError
from apiforge.core.settings import Settings
from apiforge.core.shared import close_limits_storage, make_limits_storage


@pytest.fixture(params=["memory", "configured"])
async def storage(request: pytest.FixtureRequest, settings: Settings) -> AsyncIterator[Storage]:
    if request.param == "memory":
        yield MemoryStorage()
        return
    configured = make_limits_storage(settings)
    yield configured
    await close_limits_storage(configured)


async def _remaining(throttle: LoginThrottle, scope: str, identifier: str) -> int:
    stats = await throttle.limiter.get_window_stats(throttle.item, f"login-{scope}", identifier)
    return stats.remaining


async def test_concurrent_reservations_never_exceed_the_limit(storage: Storage) -> None:
    throttle = LoginThrottle(storage, 3, 60)
    results = await asyncio.gather(
        *(throttle.reserve("a@example.com", "192.0.2.1") for _ in range(20)),
        return_exceptions=True,
    )
    assert sum(result is None for result in results) == 3
    assert all(isinstance(r, RateLimitedError) for r in results if r is not None)
    assert await _remaining(throttle, "email", "a@example.com") == 0
    assert await _remaining(throttle, "ip", "192.0.2.1") == 0


async def test_a_refused_reservation_counts_nowhere(storage: Storage) -> None:
    throttle = LoginThrottle(storage, 2, 60)
    for n in range(2):  # the IP is full; these emails hold one place each
        await throttle.reserve(f"{n}@example.com", "192.0.2.1")
    with pytest.raises(RateLimitedError):
        await throttle.reserve("b@example.com", "192.0.2.1")
    assert await _remaining(throttle, "email", "b@example.com") == 2


async def test_success_clears_the_email_and_returns_one_place_to_the_ip(storage: Storage) -> None:
    throttle = LoginThrottle(storage, 5, 60)
    for _ in range(3):
        await throttle.reserve("a@example.com", "192.0.2.1")
    await throttle.succeeded("a@example.com", "192.0.2.1")
    assert await _remaining(throttle, "email", "a@example.com") == 5
    assert await _remaining(throttle, "ip", "192.0.2.1") == 3
    await throttle.reserve("a@example.com", "192.0.2.1")
    await throttle.give_back("a@example.com", "192.0.2.1")
    assert await _remaining(throttle, "email", "a@example.com") == 5
    assert await _remaining(throttle, "ip", "192.0.2.1") == 3
    await throttle.give_back("c@example.com", "192.0.2.9")  # nothing held: nothing goes below 0
    assert await _remaining(throttle, "email", "c@example.com") == 5
    await throttle.reserve("c@example.com", "192.0.2.9")
    assert await _remaining(throttle, "email", "c@example.com") == 4
