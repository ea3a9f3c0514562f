"""Fourth review of billing: welcome credits granted once per console account (not once per
workspace: creating, or deleting and recreating, workspaces must not farm them), also when one
account's workspaces get their first wallets at the same moment; and the order wallet rows are
locked in when a redemption, a top-up, a welcome grant and charges race on PostgreSQL."""

import asyncio
from typing import Any

import httpx
import pytest
from alembic import command
from fastapi import FastAPI
from httpx import AsyncClient, Response

from apiforge.billing.models import PLATFORM_WALLETS
from apiforge.core.settings import Settings
from apiforge.migrate import alembic_config
from tests._servers import running_servers
from tests.conftest import DATABASE_URL
from tests.e2e._billing import (
    COST,
    PRICE,
    balances,
    invoke,
    ledger_invariants,
    market,
    top_up,
    unlimited_plan,
)
from tests.e2e._plans import on_plan
from tests.e2e._workspaces import add_member, data_of, new_workspace
from tests.factories import User, make_admin, register

WELCOME = 30
ISSUANCE = PLATFORM_WALLETS["issuance"]


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"welcome_credits": WELCOME})


def _in(user: User, workspace_id: str) -> dict[str, str]:
    return {**user.headers, "X-Workspace-Id": workspace_id}


async def _welcomes(client: AsyncClient, user: User, workspace_id: str) -> list[int]:
    url = "/api/v1/ledger-entries?kind=welcome&pageSize=100"
    listed = data_of(await client.get(url, headers=_in(user, workspace_id)))
    return [entry["amount"] for entry in listed["list"]]


async def _redeem(client: AsyncClient, user: User, amount: int, target: str) -> Response:
    body = {"amount": amount, "targetWorkspaceId": target}
    return await client.post("/api/v1/redemptions", json=body, headers=user.headers)


async def test_welcome_credits_come_once_per_account_not_per_workspace(
    app: FastAPI, client: AsyncClient
) -> None:
    """An account's first wallet gets the credits; its further workspaces, and one created
    after deleting a workspace that got them, start at 0. Another account still gets its own."""
    owner = await register(client)
    assert await balances(client, owner) == {"balance": WELCOME, "earnings": 0}
    team = await new_workspace(client, owner, "Team")
    assert await balances(client, owner, team) == {"balance": 0, "earnings": 0}
    assert await _welcomes(client, owner, team) == []
    doomed = await new_workspace(client, owner, "Doomed")
    assert (await balances(client, owner, doomed))["balance"] == 0
    deleted = await client.delete(f"/api/v1/workspaces/{doomed}", headers=owner.headers)
    assert deleted.status_code == 200, deleted.text
    again = await new_workspace(client, owner, "Again")
    assert (await balances(client, owner, again))["balance"] == 0
    other = await register(client)
    assert (await balances(client, other))["balance"] == WELCOME
    wallets = await ledger_invariants(app)
    assert wallets[ISSUANCE] == -2 * WELCOME


async def test_a_workspace_s_first_wallet_made_by_someone_else_counts_for_its_owner(
    app: FastAPI, client: AsyncClient
) -> None:
    """The account is the workspace's owner, whoever's request creates its wallets: here an
    administrator's top-up into a fresh account's second workspace, after its first got the
    welcome through the account's own wallet list."""
    admin = await make_admin(app, client)
    owner = await register(client)
    team = await new_workspace(client, owner, "Team")
    assert (await balances(client, owner))["balance"] == WELCOME
    await top_up(client, admin, team, 7)
    assert await balances(client, owner, team) == {"balance": 7, "earnings": 0}
    fresh = await register(client)
    fresh_team = await new_workspace(client, fresh, "Team")
    await top_up(client, admin, fresh_team, 7)  # the fresh account's first wallet: welcomed
    assert (await balances(client, fresh, fresh_team))["balance"] == 7 + WELCOME
    assert (await balances(client, fresh))["balance"] == 0
    await ledger_invariants(app)


async def _many_workspaces(app: FastAPI, client: AsyncClient, owner: User, count: int) -> list[str]:
    admin = await make_admin(app, client)
    await on_plan(client, admin, owner.workspace_id, "roomy", workspaces=count + 1)
    return [owner.workspace_id] + [
        await new_workspace(client, owner, f"W{i}") for i in range(count - 1)
    ]


async def test_one_account_s_workspaces_racing_for_first_wallets_get_one_welcome(
    app: FastAPI, client: AsyncClient, settings: Settings
) -> None:
    """Eight workspaces of one account get their first wallets at the same moment, each from
    several requests at once (PostgreSQL: spread over two server processes): one welcome."""
    owner = await register(client)
    workspaces = await _many_workspaces(app, client, owner, 8)

    async def run(https: list[AsyncClient]) -> list[Response]:
        jobs = [
            https[i % len(https)].get("/api/v1/wallets", headers=_in(owner, ws))
            for i, ws in enumerate(workspaces * 3)
        ]
        return await asyncio.gather(*jobs)

    if DATABASE_URL.startswith("postgresql"):
        async with running_servers(settings, count=2) as urls:
            https = [AsyncClient(base_url=url, timeout=60) for url in urls]
            try:
                responses = await run(https)
            finally:
                for http in https:
                    await http.aclose()
    else:
        responses = await run([client])
    assert [r.status_code for r in responses] == [200] * len(responses), [
        r.text for r in responses if r.status_code != 200
    ]
    granted = [sum(await _welcomes(client, owner, ws)) for ws in workspaces]
    assert sorted(granted) == [0] * (len(workspaces) - 1) + [WELCOME]
    found = [(await balances(client, owner, ws))["balance"] for ws in workspaces]
    assert found == granted
    wallets = await ledger_invariants(app)
    assert wallets[ISSUANCE] == -WELCOME


@pytest.mark.skipif(not DATABASE_URL.startswith("postgresql"), reason="needs PostgreSQL")
async def test_first_redemptions_racing_top_ups_never_deadlock(
    app: FastAPI, client: AsyncClient
) -> None:
    """A fresh workspace's first billing request is a redemption (402: it earned nothing) into a
    team it belongs to, while an administrator tops the team up. The redemption used to lock
    the issuance wallet (its own welcome grant) before the team's wallet, the top-up the other
    way round: PostgreSQL then aborted one of them as a deadlock (500)."""
    admin = await make_admin(app, client)
    owner = await register(client)
    team = await new_workspace(client, owner, "Team")
    await on_plan(client, admin, team, "crowded", members=100)
    await top_up(client, admin, team, 1)  # the team's wallets exist (older ids than any new one)
    fresh = [await register(client) for _ in range(24)]
    for user in fresh:
        await add_member(client, owner, team, user, "viewer")
    jobs: list[Any] = []
    for user in fresh:
        jobs.append(_redeem(client, user, 1, team))
        jobs.append(
            client.post(
                f"/api/v1/admin/wallets/{team}/credits", json={"amount": 2}, headers=admin.headers
            )
        )
    responses = await asyncio.gather(*jobs)
    statuses = [r.status_code for r in responses]
    assert statuses == [402, 200] * len(fresh), [r.text for r in responses if r.status_code >= 500]
    assert (await balances(client, owner, team))["balance"] == WELCOME + 1 + 2 * len(fresh)
    await ledger_invariants(app)


async def test_redemptions_top_ups_welcomes_and_charges_racing_keep_every_ru(
    app: FastAPI, client: AsyncClient
) -> None:
    """Rounds of a builder's redemptions into its own workspaces and into fresh teams (their
    first wallets, and so their owners' welcome grants), first redemptions from fresh
    workspaces that earned nothing, top-ups into all of them, and a consumer's calls (which
    credit the builder's earnings), all at once: only 200 and 402, every wallet exact to the
    unit as the statuses say, the ledger balanced."""
    m = await market(app, client)
    await unlimited_plan(client, m)
    await top_up(client, m.admin, m.consumer.workspace_id, 20 * PRICE)
    assert [await invoke(client, m) for _ in range(20)] == [200] * 20
    builder = m.builder
    own_team = await new_workspace(client, builder, "Own team")
    await on_plan(client, m.admin, own_team, "crowded", members=100)
    await top_up(client, m.admin, own_team, 1)
    fresh_teams = []
    for _ in range(4):
        owner = await register(client)
        await add_member(client, owner, owner.workspace_id, builder, "viewer")
        fresh_teams.append((owner, owner.workspace_id))
    idle = [await register(client) for _ in range(6)]
    for user in idle:
        await add_member(client, builder, own_team, user, "viewer")
    targets = [builder.workspace_id, own_team] + [ws for _, ws in fresh_teams]
    before = await ledger_invariants(app)
    consumer_before = (await balances(client, m.consumer))["balance"]
    builder_before = await balances(client, builder)
    own_team_before = (await balances(client, builder, own_team))["balance"]

    rounds = 6
    kinds: list[tuple[str, str | None]] = []
    jobs: list[Any] = []
    for _ in range(rounds):
        for target in targets:
            kinds.append(("redeem", target))
            jobs.append(_redeem(client, builder, 5, target))
            kinds.append(("topup", target))
            jobs.append(
                client.post(
                    f"/api/v1/admin/wallets/{target}/credits",
                    json={"amount": 3},
                    headers=m.admin.headers,
                )
            )
        kinds.append(("topup", m.consumer.workspace_id))
        jobs.append(
            client.post(
                f"/api/v1/admin/wallets/{m.consumer.workspace_id}/credits",
                json={"amount": 2 * PRICE},
                headers=m.admin.headers,
            )
        )
        for _ in range(4):
            kinds.append(("call", None))
            jobs.append(invoke(client, m))
    for user in idle:
        kinds.append(("idle", own_team))
        jobs.append(_redeem(client, user, 1, own_team))
    results = await asyncio.gather(*jobs)
    statuses = [r if isinstance(r, int) else r.status_code for r in results]
    bad = [
        (kind, r.text if isinstance(r, httpx.Response) else r)
        for kind, r, status in zip(kinds, results, statuses, strict=True)
        if status not in (200, 402)
    ]
    assert bad == []

    def count(kind: str, target: str | None, status: int) -> int:
        return sum(
            1 for k, s in zip(kinds, statuses, strict=True) if k == (kind, target) and s == status
        )

    assert all(count("topup", t, 200) == rounds for t in targets)
    assert count("topup", m.consumer.workspace_id, 200) == rounds
    assert count("idle", own_team, 402) == len(idle)
    paid = count("call", None, 200)
    redeemed = {t: count("redeem", t, 200) for t in targets}
    assert paid + count("call", None, 402) == 4 * rounds
    assert sum(redeemed.values()) + sum(count("redeem", t, 402) for t in targets) == rounds * len(
        targets
    )
    assert await balances(client, m.consumer) == {
        "balance": consumer_before + 2 * PRICE * rounds - PRICE * paid,
        "earnings": 0,
    }
    assert await balances(client, builder) == {
        "balance": builder_before["balance"] + 3 * rounds + 5 * redeemed[builder.workspace_id],
        "earnings": builder_before["earnings"] + (PRICE - COST) * paid - 5 * sum(redeemed.values()),
    }
    assert (await balances(client, builder, own_team))["balance"] == (
        own_team_before + 3 * rounds + 5 * redeemed[own_team]
    )
    for owner, ws in fresh_teams:
        assert await balances(client, owner) == {
            "balance": WELCOME + 3 * rounds + 5 * redeemed[ws],
            "earnings": 0,
        }
        assert await _welcomes(client, owner, ws) == [WELCOME]
    after = await ledger_invariants(app)
    revenue = PLATFORM_WALLETS["revenue"]
    assert after[revenue] == before[revenue] + COST * paid
    issued = 3 * rounds * len(targets) + 2 * PRICE * rounds + WELCOME * len(fresh_teams)
    assert after[ISSUANCE] == before[ISSUANCE] - issued


async def test_an_upgrade_counts_accounts_already_welcomed(
    app: FastAPI, client: AsyncClient, settings: Settings
) -> None:
    """Data from before `welcome_grants`: an account whose workspace got a `welcome` entry is
    recorded as welcomed by the migration (its new workspaces start at 0); an account that got
    none is welcomed once after the upgrade."""
    welcomed = await register(client)
    assert (await balances(client, welcomed))["balance"] == WELCOME
    not_yet = await register(client)
    config = alembic_config(settings.resolved_database_url)
    await asyncio.to_thread(command.downgrade, config, "0014")
    await asyncio.to_thread(command.upgrade, config, "head")
    team = await new_workspace(client, welcomed, "Team")
    assert (await balances(client, welcomed, team))["balance"] == 0
    second = await new_workspace(client, not_yet, "Team")
    assert (await balances(client, not_yet, second))["balance"] == WELCOME
    assert (await balances(client, not_yet))["balance"] == 0
    await ledger_invariants(app)
