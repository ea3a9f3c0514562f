"""The in-process wallet cache of SQLite charging, and the charge split."""

from typing import Any

import pytest

from apiforge.billing.charging import MemoryWallets, split


class FakeBalances:
    """Stands in for the database read of `_read_balance` (the only I/O of `reserve`)."""

    def __init__(self, balance: int) -> None:
        self.balance = balance
        self.reads = 0


@pytest.fixture
def memory(monkeypatch: pytest.MonkeyPatch) -> tuple[MemoryWallets, FakeBalances]:
    db = FakeBalances(100)

    async def read(_conn: Any, _wallet: str) -> int:
        db.reads += 1
        return db.balance

    monkeypatch.setattr("apiforge.billing.charging._read_balance", read)
    return MemoryWallets(), db


async def test_reservations_never_exceed_the_balance(
    memory: tuple[MemoryWallets, FakeBalances],
) -> None:
    wallets, db = memory
    granted = [await wallets.reserve(None, "w", 30) for _ in range(4)]  # type: ignore[arg-type]
    assert granted == [True, True, True, False]
    assert wallets.known("w") == (100, 90)
    # read once, then served from memory; the refusal read it again (another process on the
    # same SQLite file may have credited the wallet)
    assert db.reads == 2
    wallets.release("w", 30)  # a failed call gives its reservation back
    assert await wallets.reserve(None, "w", 30)  # type: ignore[arg-type]


async def test_settled_charges_and_credits_move_the_cached_balance(
    memory: tuple[MemoryWallets, FakeBalances],
) -> None:
    wallets, _ = memory
    assert await wallets.reserve(None, "w", 40)  # type: ignore[arg-type]
    wallets.begin_write("w")
    wallets.end_write("w", -40, released=40)  # the call committed
    assert wallets.known("w") == (60, 0)
    wallets.begin_write("w")
    wallets.end_write("w", 25)  # a top-up committed
    assert wallets.known("w") == (85, 0)
    wallets.begin_write("w")
    wallets.end_write("w", None)  # an outcome nobody knows: read the database again
    assert wallets.known("w") == (None, 0)


async def test_a_read_racing_a_write_is_not_cached(
    memory: tuple[MemoryWallets, FakeBalances],
) -> None:
    wallets, db = memory
    wallets.begin_write("w")  # a top-up in flight: its commit may or may not be in the read
    assert await wallets.reserve(None, "w", 10)  # type: ignore[arg-type]
    assert wallets.known("w") == (None, 10)  # used for this decision, not kept
    db.balance = 150
    wallets.end_write("w", 50)
    assert await wallets.reserve(None, "w", 10)  # type: ignore[arg-type]
    assert wallets.known("w") == (150, 20)
    assert db.reads == 2


def test_split() -> None:
    assert split(10, 3, own_app=False) == (10, 7, 3)
    assert split(10, 3, own_app=True) == (3, 0, 3)  # a workspace pays itself no profit
    assert split(0, 0, own_app=False) == (0, 0, 0)
    assert split(2, 5, own_app=False) == (2, 0, 2)  # never more than the price
