"""`ledger.post`, the one writer of wallets and entries: balanced or nothing."""

import pytest
from fastapi import FastAPI
from httpx import AsyncClient
from sqlalchemy import func, select

from apiforge.billing.ledger import InsufficientFundsError, Leg, ensure_wallets, post
from apiforge.billing.models import PLATFORM_WALLETS, LedgerEntry, Wallet
from tests.factories import register

ISSUANCE = PLATFORM_WALLETS["issuance"]
REVENUE = PLATFORM_WALLETS["revenue"]


async def _workspace_wallet(app: FastAPI, client: AsyncClient) -> tuple[str, str]:
    user = await register(client)
    async with app.state.engine.begin() as conn:
        wallets, created = await ensure_wallets(conn, user.workspace_id, welcome_credits=0)
    assert created
    return user.workspace_id, wallets["balance"]


async def _counts(app: FastAPI) -> tuple[int, dict[str, int]]:
    async with app.state.engine.connect() as conn:
        entries = int(await conn.scalar(select(func.count()).select_from(LedgerEntry)) or 0)
        balances = dict((await conn.execute(select(Wallet.id, Wallet.balance))).all())
    return entries, balances


async def test_postings_balance_or_nothing_is_written(app: FastAPI, client: AsyncClient) -> None:
    workspace, wallet = await _workspace_wallet(app, client)
    async with app.state.engine.begin() as conn:
        await post(conn, [Leg(ISSUANCE, None, -5), Leg(wallet, workspace, 5)], kind="topup")
    before = await _counts(app)
    bad_legs = [
        [Leg(wallet, workspace, -1)],  # one leg
        [Leg(wallet, workspace, -2), Leg(REVENUE, None, 1)],  # not summing to zero
        [Leg(wallet, workspace, 0), Leg(REVENUE, None, 0)],  # nothing moved
    ]
    for legs in bad_legs:
        async with app.state.engine.begin() as conn:
            with pytest.raises(ValueError, match="leg"):
                await post(conn, legs, kind="call")
    # more than the wallet holds: refused, and the transaction is rolled back by the caller
    with pytest.raises(InsufficientFundsError):
        async with app.state.engine.begin() as conn:
            await post(conn, [Leg(wallet, workspace, -6), Leg(REVENUE, None, 6)], kind="call")
    assert await _counts(app) == before
    async with app.state.engine.begin() as conn:
        await post(conn, [Leg(wallet, workspace, -5), Leg(REVENUE, None, 5)], kind="call")
    entries, balances = await _counts(app)
    assert entries == before[0] + 2
    assert balances[wallet] == 0
    assert balances[ISSUANCE] == before[1][ISSUANCE]  # the issuance wallet may go below zero


async def test_wallets_are_created_once_with_one_welcome(app: FastAPI, client: AsyncClient) -> None:
    user = await register(client)
    async with app.state.engine.begin() as conn:
        first, created = await ensure_wallets(conn, user.workspace_id, welcome_credits=50)
        again, created_again = await ensure_wallets(conn, user.workspace_id, welcome_credits=50)
    assert created
    assert not created_again
    assert first == again
    async with app.state.engine.connect() as conn:
        balance = await conn.scalar(select(Wallet.balance).where(Wallet.id == first["balance"]))
        welcomes = await conn.scalar(
            select(func.count()).where(
                LedgerEntry.wallet_id == first["balance"], LedgerEntry.kind == "welcome"
            )
        )
    assert (balance, welcomes) == (50, 1)
