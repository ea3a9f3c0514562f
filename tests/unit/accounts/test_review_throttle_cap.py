"""The sign-in throttle's in-process windows have a hard cap: past it an attempt that would open
a window is refused, and no window is forgotten — forgetting would let a flood from many
addresses wipe the failures counted against a victim's email."""

import pytest
from limits.aio.storage import MemoryStorage

from apiforge.accounts import throttle as throttle_module
from apiforge.accounts.throttle import LoginThrottle
from apiforge.core.errors import RateLimitedError

CAP = 40


async def test_past_the_cap_new_windows_are_refused_and_none_is_forgotten(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(throttle_module, "MAX_WINDOWS", CAP, raising=False)
    storage = MemoryStorage()
    throttle = LoginThrottle(storage, 3, 900)
    for _ in range(2):  # the attacker's guesses against the victim's account
        await throttle.reserve("victim@example.com", "198.51.100.7")
    refusals: list[RateLimitedError] = []
    for n in range(4 * CAP):  # a flood from ever new addresses, each with a new email
        try:
            await throttle.reserve(f"ghost{n}@example.com", f"2001:db8:{n:x}::1")
        except RateLimitedError as exc:
            refusals.append(exc)
        assert len(storage.events) <= CAP
    assert len(refusals) == 4 * CAP - (CAP - 2) // 2
    assert {exc.reason for exc in refusals} == {"login_throttled"}
    assert all(int(exc.headers["Retry-After"]) >= 1 for exc in refusals)
    # The victim's failures are all still counted: one guess left, then refused.
    await throttle.reserve("victim@example.com", "198.51.100.7")
    with pytest.raises(RateLimitedError):
        await throttle.reserve("victim@example.com", "198.51.100.7")
    # A client whose windows are both held still signs in as before.
    await throttle.succeeded("victim@example.com", "198.51.100.7")
    await throttle.reserve("victim@example.com", "198.51.100.7")
