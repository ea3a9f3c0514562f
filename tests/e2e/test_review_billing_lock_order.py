"""Billing under review: the order money movements lock rows in on PostgreSQL, against the
creation of first wallets (and their welcome credits), top-ups, and the deletion of the
workspaces (or their owner's account) they move RU of. Each racing set is sent many times at
once: a deadlock PostgreSQL aborts is a 500, and every RU must stay where the answers say."""

import asyncio
from typing import Any

import pytest
from fastapi import FastAPI
from httpx import AsyncClient, Response
from sqlalchemy import insert, select

from apiforge.billing.ledger import Leg, post
from apiforge.billing.models import PLATFORM_WALLETS, Wallet, Withdrawal
from apiforge.core.settings import Settings
from apiforge.tools.clock import utcnow
from apiforge.tools.ids import new_id
from tests.e2e._billing import balances, ledger_invariants
from tests.e2e._plans import on_plan
from tests.e2e._workspaces import add_member, data_of, new_workspace
from tests.factories import User, make_admin, register

WELCOME = 30
ROUNDS = 30
ESCROW = PLATFORM_WALLETS["escrow"]


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"welcome_credits": WELCOME})


def _in(user: User, workspace_id: str) -> dict[str, str]:
    return {**user.headers, "X-Workspace-Id": workspace_id}


async def _earned(app: FastAPI, workspace_id: str, amount: int) -> None:
    """`amount` RU in the workspace's earnings wallet, as its apps' calls would have put there.
    Its wallets are made here (no welcome credits), inserted as `create_wallets` does (balance,
    then earnings) but with the earnings wallet's id sorting first, as it does for about half
    of all workspaces (ids minted in one millisecond sort at random): a posting moving both
    then updates them in the other order than a deletion's cascade detaching them."""
    now = utcnow()
    earnings, balance = sorted([new_id(), new_id()])
    rows = [
        {"id": wallet_id, "workspace_id": workspace_id, "kind": kind, "balance": 0, "held": 0}
        for wallet_id, kind in ((balance, "balance"), (earnings, "earnings"))
    ]
    async with app.state.engine.begin() as conn:
        await conn.execute(
            insert(Wallet), [{**r, "created_at": now, "updated_at": now} for r in rows]
        )
        legs = [
            Leg(PLATFORM_WALLETS["issuance"], None, -amount),
            Leg(earnings, workspace_id, amount),
        ]
        await post(conn, legs, kind="topup", note="earned")


def _post(client: AsyncClient, user: User, path: str, body: Any, workspace_id: str) -> Any:
    return client.post(path, json=body, headers=_in(user, workspace_id))


def _top_up(client: AsyncClient, admin: User, workspace_id: str, amount: int) -> Any:
    url = f"/api/v1/admin/wallets/{workspace_id}/credits"
    return client.post(url, json={"amount": amount}, headers=admin.headers)


def _decide(client: AsyncClient, admin: User, withdrawal_id: str, status: str) -> Any:
    url = f"/api/v1/admin/withdrawals/{withdrawal_id}"
    return client.patch(url, json={"status": status}, headers=admin.headers)


def _statuses(responses: list[Response], allowed: set[int]) -> list[int]:
    """The statuses, after checking each is one of `allowed` (a 500 is a deadlock)."""
    bad = [
        (r.request.method, r.request.url.path, r.text)
        for r in responses
        if r.status_code not in allowed
    ]
    assert bad == [], bad
    return [r.status_code for r in responses]


async def _pending_withdrawals(
    app: FastAPI, client: AsyncClient
) -> tuple[User, User, list[tuple[str, str]]]:
    """An admin, a builder, and per round a doomed workspace with a requested withdrawal of 4."""
    admin = await make_admin(app, client)
    builder = await register(client)
    rounds = []
    for workspace_id in await _doomed_workspaces(app, client, admin, builder):
        made = await _post(client, builder, "/api/v1/withdrawals", {"amount": 4}, workspace_id)
        rounds.append((workspace_id, data_of(made)["id"]))
    return admin, builder, rounds


async def _doomed_workspaces(
    app: FastAPI, client: AsyncClient, admin: User, builder: User
) -> list[str]:
    await on_plan(client, admin, builder.workspace_id, "crowded", workspaces=-1)
    found = []
    for i in range(ROUNDS):
        workspace_id = await new_workspace(client, builder, f"Doomed {i}")
        await _earned(app, workspace_id, 10)
        found.append(workspace_id)
    return found


async def test_first_wallets_made_by_redemptions_and_top_ups_at_once_never_deadlock(
    app: FastAPI, client: AsyncClient
) -> None:
    """Per round, a fresh account (neither of its workspaces has wallets): a builder redeems
    into its personal workspace while an administrator tops up both of its workspaces (the
    first wallets of each, one welcome grant for the two) and it redeems out of its personal
    workspace, which earned nothing (402, creating nothing), into the other one. Only 200 and
    that 402; the welcome credits came once per account; every RU is where it should be."""
    admin = await make_admin(app, client)
    builder = await register(client)
    source = await new_workspace(client, builder, "Source")
    await _earned(app, source, 5 * ROUNDS)
    fresh = []
    for i in range(ROUNDS):
        owner = await register(client)
        await add_member(client, owner, owner.workspace_id, builder, "viewer")
        fresh.append((owner, await new_workspace(client, owner, f"Team {i}")))
    jobs: list[Any] = []
    for owner, team in fresh:
        home = owner.workspace_id
        jobs.append(
            _post(
                client,
                builder,
                "/api/v1/redemptions",
                {"amount": 5, "targetWorkspaceId": home},
                source,
            )
        )
        jobs.append(_top_up(client, admin, home, 2))
        jobs.append(_top_up(client, admin, team, 3))
        jobs.append(
            _post(
                client, owner, "/api/v1/redemptions", {"amount": 1, "targetWorkspaceId": team}, home
            )
        )
    statuses = _statuses(await asyncio.gather(*jobs), {200, 402})
    assert statuses == [200, 200, 200, 402] * ROUNDS
    for owner, team in fresh:
        personal = (await balances(client, owner))["balance"]
        other = (await balances(client, owner, team))["balance"]
        assert sorted([personal - 5 - 2, other - 3]) == [0, WELCOME]
    assert await balances(client, builder, source) == {"balance": 0, "earnings": 0}
    await ledger_invariants(app)


async def test_rejections_racing_the_deletion_of_the_withdrawal_s_workspace(
    app: FastAPI, client: AsyncClient
) -> None:
    """A rejection locked the withdrawal, then the earnings wallet; the deletion's cascade
    detached the wallets, then the withdrawals: PostgreSQL aborted one of the two (500). Now
    each deletion succeeds, and each rejection either ran first (the RU back in the earnings
    the deletion then detached) or found the workspace gone (400, the RU still in escrow)."""
    admin, builder, rounds = await _pending_withdrawals(app, client)
    jobs: list[Any] = []
    for workspace_id, withdrawal_id in rounds:
        jobs.append(_decide(client, admin, withdrawal_id, "rejected"))
        jobs.append(client.delete(f"/api/v1/workspaces/{workspace_id}", headers=builder.headers))
    statuses = _statuses(await asyncio.gather(*jobs), {200, 400})
    assert statuses[1::2] == [200] * ROUNDS
    returned = [status == 200 for status in statuses[::2]]
    async with app.state.engine.connect() as conn:
        found = dict((await conn.execute(select(Withdrawal.id, Withdrawal.status))).all())
    assert [found[w] for _, w in rounds] == ["rejected" if r else "requested" for r in returned]
    wallets = await ledger_invariants(app)
    assert wallets[ESCROW] == 4 * returned.count(False)


async def test_redemptions_within_a_workspace_racing_its_deletion(
    app: FastAPI, client: AsyncClient
) -> None:
    """A redemption into its own workspace moves two of its wallets, in id order; the deletion
    detaches them in kind order: the other order when the earnings wallet's id sorts first, and
    a deadlock (500). Now the redemption holds the workspace's row first: it runs before the
    deletion (200) or finds the workspace gone (404)."""
    admin = await make_admin(app, client)
    builder = await register(client)
    doomed = await _doomed_workspaces(app, client, admin, builder)
    jobs: list[Any] = []
    for workspace_id in doomed:
        jobs.append(_post(client, builder, "/api/v1/redemptions", {"amount": 4}, workspace_id))
        jobs.append(client.delete(f"/api/v1/workspaces/{workspace_id}", headers=builder.headers))
    statuses = _statuses(await asyncio.gather(*jobs), {200, 404})
    assert statuses[1::2] == [200] * ROUNDS
    async with app.state.engine.connect() as conn:
        rows = (await conn.execute(select(Wallet.id, Wallet.kind, Wallet.balance))).all()
    wallets = await ledger_invariants(app)
    assert sum(b for _, kind, b in rows if kind == "balance") == 4 * statuses[::2].count(200)
    assert wallets[ESCROW] == 0


async def test_withdrawals_requested_and_approved_racing_the_deletion(
    app: FastAPI, client: AsyncClient
) -> None:
    """An approval (escrow → payouts) and a second request (earnings → escrow) while the
    workspace is deleted: never a deadlock, and a request that finds the workspace gone is 404
    (not 402 for an earnings wallet it no longer finds)."""
    admin, builder, rounds = await _pending_withdrawals(app, client)
    jobs: list[Any] = []
    for workspace_id, withdrawal_id in rounds:
        jobs.append(_decide(client, admin, withdrawal_id, "approved"))
        jobs.append(_post(client, builder, "/api/v1/withdrawals", {"amount": 3}, workspace_id))
        jobs.append(client.delete(f"/api/v1/workspaces/{workspace_id}", headers=builder.headers))
    statuses = _statuses(await asyncio.gather(*jobs), {200, 404})
    assert statuses[::3] == [200] * ROUNDS
    assert statuses[2::3] == [200] * ROUNDS
    wallets = await ledger_invariants(app)
    assert wallets[PLATFORM_WALLETS["payouts"]] == 4 * ROUNDS
    assert wallets[ESCROW] == 3 * statuses[1::3].count(200)


async def test_redemptions_both_ways_between_two_workspaces_never_deadlock(
    app: FastAPI, client: AsyncClient
) -> None:
    """A → B and B → A at once, with top-ups of both: every posting updates wallet rows by id
    (A's earnings and B's balance, B's earnings and A's balance), so one waits for the other."""
    admin = await make_admin(app, client)
    builder = await register(client)
    await on_plan(client, admin, builder.workspace_id, "crowded", workspaces=-1)
    pairs = []
    for i in range(ROUNDS):
        a = await new_workspace(client, builder, f"A {i}")
        b = await new_workspace(client, builder, f"B {i}")
        await _earned(app, a, 10)
        await _earned(app, b, 10)
        pairs.append((a, b))
    jobs: list[Any] = []
    for a, b in pairs:
        jobs.append(
            _post(client, builder, "/api/v1/redemptions", {"amount": 3, "targetWorkspaceId": b}, a)
        )
        jobs.append(
            _post(client, builder, "/api/v1/redemptions", {"amount": 4, "targetWorkspaceId": a}, b)
        )
        jobs.append(_top_up(client, admin, a, 1))
        jobs.append(_top_up(client, admin, b, 1))
    _statuses(await asyncio.gather(*jobs), {200})
    for a, b in pairs:
        assert await balances(client, builder, a) == {"balance": 4 + 1, "earnings": 7}
        assert await balances(client, builder, b) == {"balance": 3 + 1, "earnings": 6}
    await ledger_invariants(app)


async def test_redemptions_both_ways_racing_the_deletion_of_their_owner(
    app: FastAPI, client: AsyncClient
) -> None:
    """An administrator deletes an account (its two workspaces) while it redeems between them
    both ways and within one: each redemption ran first (200) or found a workspace (or the
    account) gone; never a deadlock, and the ledger balances."""
    admin = await make_admin(app, client)
    rounds = []
    for i in range(ROUNDS):
        builder = await register(client)
        team = await new_workspace(client, builder, f"Team {i}")
        await _earned(app, builder.workspace_id, 10)
        await _earned(app, team, 10)
        rounds.append((builder, team))
    jobs: list[Any] = []
    for builder, team in rounds:
        home = builder.workspace_id
        jobs.append(
            _post(
                client,
                builder,
                "/api/v1/redemptions",
                {"amount": 3, "targetWorkspaceId": team},
                home,
            )
        )
        jobs.append(
            _post(
                client,
                builder,
                "/api/v1/redemptions",
                {"amount": 4, "targetWorkspaceId": home},
                team,
            )
        )
        jobs.append(_post(client, builder, "/api/v1/redemptions", {"amount": 2}, team))
        url = f"/api/v1/admin/users/{builder.account_id}?force=true"
        jobs.append(client.delete(url, headers=admin.headers))
    statuses = _statuses(await asyncio.gather(*jobs), {200, 401, 404})
    assert statuses[3::4] == [200] * ROUNDS
    await ledger_invariants(app)
