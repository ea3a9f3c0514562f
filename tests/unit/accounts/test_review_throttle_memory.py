"""The sign-in throttle's in-process storage stays bounded under a flood of random emails: an
address out of places creates no window for the emails it goes on trying."""

import pytest
from limits.aio.storage import MemoryStorage

from apiforge.accounts.throttle import LoginThrottle
from apiforge.core.errors import RateLimitedError

ATTEMPTS = 20_000


async def test_random_emails_from_a_throttled_ip_leave_nothing_behind() -> None:
    storage = MemoryStorage()
    throttle = LoginThrottle(storage, 5, 900)
    refusals: list[RateLimitedError] = []
    for n in range(ATTEMPTS):
        try:
            await throttle.reserve(f"ghost{n}@example.com", "203.0.113.9")
        except RateLimitedError as exc:
            refusals.append(exc)
    assert len(refusals) == ATTEMPTS - 5
    assert {exc.reason for exc in refusals} == {"login_throttled"}
    assert all(exc.headers["RateLimit"].startswith('"ip";r=0;') for exc in refusals)
    # The five emails that got a check and the address: nothing per refused attempt.
    assert len(storage.events) <= 6, len(storage.events)
    assert len(storage.locks) <= 6, len(storage.locks)


async def test_a_locked_email_is_named_first_when_the_ip_is_out_of_places_too() -> None:
    throttle = LoginThrottle(MemoryStorage(), 2, 900)
    for _ in range(2):
        await throttle.reserve("a@example.com", "203.0.113.9")
    for ip in ("203.0.113.9", "198.51.100.7"):  # both full, then only the email
        with pytest.raises(RateLimitedError) as refused:
            await throttle.reserve("a@example.com", ip)
        assert refused.value.headers["RateLimit"].startswith('"email";r=0;')
    with pytest.raises(RateLimitedError) as refused:  # only the address is full
        await throttle.reserve("b@example.com", "203.0.113.9")
    assert refused.value.headers["RateLimit"].startswith('"ip";r=0;')
    # A refused attempt took no place: the other address still has both of its own.
    stats = await throttle.limiter.get_window_stats(throttle.item, "login-ip", "198.51.100.7")
    assert stats.remaining == 2
