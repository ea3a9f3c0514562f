"""Billing under review: priced gateway calls racing the deletion of the workspaces whose wallets
their charges move — the caller's, the builder's, or an account owning both (calling its own
priced API from its other workspace) — on PostgreSQL, where a charge and a deletion's cascade
lock the same wallet rows. Each racing set is sent many times at once: a deadlock PostgreSQL
aborts is a 500 (of the call or of the deletion). Every call answered 200 was charged exactly
once, with a balanced transaction; every other call was charged nothing; no RU moved into or out
of a wallet after its workspace's deletion detached it."""

import asyncio
from collections import Counter
from dataclasses import dataclass
from typing import Any

import pytest
from fastapi import FastAPI
from httpx import AsyncClient, Response
from sqlalchemy import select

from apiforge.admin import service as admin_service
from apiforge.billing.models import PLATFORM_WALLETS, LedgerEntry, Wallet
from apiforge.core.settings import Settings
from apiforge.idempotency.locking import delete_row
from tests.e2e._apps import in_workspace, new_api, new_app
from tests.e2e._billing import COST, ITEM_FIELDS, PRICE, ledger_invariants, top_up
from tests.e2e._keys import create_key, subscribe
from tests.e2e._workspaces import assert_error, data_of, new_workspace
from tests.factories import User, make_admin, register

ROUNDS = 30
CALLS = 6  # priced calls per round, sent with the round's deletion
SPREAD = 0.5
FUNDS = 10 * PRICE
REVENUE = PLATFORM_WALLETS["revenue"]
UNLIMITED = {
    "workspaces": -1,
    "requestsPerMinute": -1,
    "concurrentRequests": -1,
    "callsPerMonth": -1,
}
STEPS = [{"id": "total", "type": "count", "collection": "items"}]  # cost 1 (COST)


@pytest.fixture
def settings(settings: Settings) -> Settings:
    # One consumer makes a key per round: more than an account may mint per minute.
    return settings.model_copy(update={"key_creations_per_minute": 10 * ROUNDS})


@dataclass
class Round:
    caller: str  # the calling workspace
    builder: str  # the app's workspace
    app_id: str
    secret: str
    deletion: tuple[str, dict[str, str]]  # DELETE url, headers


class Plans:
    """One plan without limits, which the workspaces of the test are moved onto."""

    def __init__(self, client: AsyncClient, admin: User) -> None:
        self.client, self.admin, self.plan_id = client, admin, ""

    async def free_of_limits(self, workspace_id: str) -> None:
        if not self.plan_id:
            body = {"code": "unlimited", "name": "Unlimited", "quotas": UNLIMITED}
            made = await self.client.post(
                "/api/v1/admin/plans", json=body, headers=self.admin.headers
            )
            self.plan_id = data_of(made)["id"]
        moved = await self.client.put(
            f"/api/v1/admin/workspaces/{workspace_id}/plan",
            json={"planId": self.plan_id},
            headers=self.admin.headers,
        )
        data_of(moved)


async def _priced_app(client: AsyncClient, owner: User, workspace_id: str) -> str:
    """A published public app of `workspace_id` whose `priced` API costs COST and is sold at
    PRICE."""
    headers = in_workspace(owner, workspace_id)
    app_id = await new_app(client, headers, "Shop", visibility="public")
    body = {"appId": app_id, "name": "items", "fields": ITEM_FIELDS}
    data_of(await client.post("/api/v1/datasets", json=body, headers=headers))
    await new_api(client, headers, app_id, "priced", steps=STEPS, price=PRICE)
    published = await client.post(
        f"/api/v1/apps/{app_id}/versions", json={"bump": "minor"}, headers=headers
    )
    data_of(published)
    return app_id


async def _paying_key(
    client: AsyncClient, admin: User, user: User, workspace_id: str, app_id: str
) -> str:
    """An app key of `workspace_id` for `app_id`, the workspace holding FUNDS (or more)."""
    headers = in_workspace(user, workspace_id)
    await subscribe(client, headers, app_id)
    _, secret = await create_key(client, headers, type="app", appId=app_id)
    await top_up(client, admin, workspace_id, FUNDS)
    return secret


async def _call(client: AsyncClient, r: Round, delay: float) -> Response:
    """A call sent `delay` seconds after the round's deletion, so that calls land all along
    the deletion's transaction (sent at once, they would all be over before its cascade)."""
    await asyncio.sleep(delay)
    body = {"appId": r.app_id, "api": "priced", "version": "latest", "args": {}}
    return await client.post("/api/v1/invocations", json=body, headers={"X-Api-Key": r.secret})


async def _timed(job: Any) -> tuple[float, float, Response]:
    loop = asyncio.get_running_loop()
    start = loop.time()
    response = await job
    return start, loop.time(), response


async def _wallets(app: FastAPI) -> dict[tuple[str | None, str], tuple[str, int]]:
    """(workspace id, kind) -> (wallet id, balance) of every wallet still owned."""
    async with app.state.engine.connect() as conn:
        rows = await conn.execute(
            select(Wallet.workspace_id, Wallet.kind, Wallet.id, Wallet.balance)
        )
        return {(r.workspace_id, r.kind): (r.id, r.balance) for r in rows}


async def _race(app: FastAPI, client: AsyncClient, rounds: list[Round]) -> None:
    """Each round's calls and deletion, all rounds at once; then the checks."""
    before = await _wallets(app)
    jobs: list[Any] = []
    for r in rounds:
        jobs.extend(_timed(_call(client, r, SPREAD * i / CALLS)) for i in range(CALLS))
        url, headers = r.deletion
        jobs.append(_timed(client.delete(url, headers=headers)))
    timed = await asyncio.gather(*jobs)
    responses: list[Response] = [t[2] for t in timed]
    bad = [
        (r.request.method, r.request.url.path, r.status_code, r.text)
        for r in responses
        if r.status_code >= 500 or r.status_code not in (200, 401, 403, 404)
    ]
    assert bad == [], bad
    per_round = CALLS + 1
    deletions = responses[CALLS::per_round]
    assert [d.status_code for d in deletions] == [200] * len(rounds), [d.text for d in deletions]
    for d in responses[CALLS::per_round]:
        data_of(d)
    charged = [
        sum(c.status_code == 200 for c in responses[i * per_round : i * per_round + CALLS])
        for i in range(len(rounds))
    ]
    wallets = await ledger_invariants(app)  # balanced, balances = their entries, none held
    async with app.state.engine.connect() as conn:
        entries = (
            await conn.execute(
                select(
                    LedgerEntry.transaction_id,
                    LedgerEntry.wallet_id,
                    LedgerEntry.workspace_id,
                    LedgerEntry.amount,
                    LedgerEntry.request_id,
                    LedgerEntry.app_id,
                    LedgerEntry.counterparty_workspace_id,
                ).where(LedgerEntry.kind == "call")
            )
        ).all()
    transactions: dict[str, list[Any]] = {}
    for e in entries:
        transactions.setdefault(e.transaction_id, []).append(e)
    requests = Counter(e.request_id for e in entries if e.workspace_id is None)
    assert [rid for rid, n in requests.items() if n != 1] == []  # no call charged twice
    moved: Counter[str] = Counter()  # wallet id -> RU the 200s moved
    for r, n in zip(rounds, charged, strict=True):
        mine = [
            t
            for t in transactions.values()
            if any(e.workspace_id == r.caller and e.amount < 0 for e in t)
            and t[0].app_id == r.app_id
        ]
        assert len(mine) == n, (r, n, len(mine))  # every 200 charged once, nothing else
        balance, earnings = before[(r.caller, "balance")][0], before[(r.builder, "earnings")][0]
        for t in mine:
            assert sorted((e.wallet_id, e.amount) for e in t) == sorted(
                [(balance, -PRICE), (earnings, PRICE - COST), (REVENUE, COST)]
            )
            # into and out of the wallets the workspaces owned, under their names
            assert {e.workspace_id for e in t} == {r.caller, r.builder, None}
        moved[balance] -= n * PRICE
        moved[earnings] += n * (PRICE - COST)
    balances = dict(before.values())
    assert {w: wallets[w] - balances[w] for w in moved} == dict(moved)
    assert wallets[REVENUE] == before[(None, "revenue")][1] + sum(charged) * COST
    # the deleted workspaces' wallets are detached, the others untouched by the deletions
    after = await _wallets(app)
    for r in rounds:
        gone = [r.caller] if r.deletion[0].endswith(r.caller) else []
        if r.deletion[0].endswith(f"{r.builder}?force=true"):
            gone.append(r.builder)
        if "/admin/users/" in r.deletion[0]:
            gone = [r.caller, r.builder]
        for workspace_id in gone:
            assert (workspace_id, "balance") not in after
            assert (workspace_id, "earnings") not in after


async def test_priced_calls_racing_the_deletion_of_the_calling_workspace(
    app: FastAPI, client: AsyncClient
) -> None:
    """Per round, a team workspace calls a builder's priced API while its owner deletes it:
    each call was charged (200) or found its key or workspace gone (401, 404)."""
    admin = await make_admin(app, client)
    plans = Plans(client, admin)
    builder, consumer = await register(client), await register(client)
    await plans.free_of_limits(consumer.workspace_id)
    app_id = await _priced_app(client, builder, builder.workspace_id)
    await top_up(client, admin, builder.workspace_id, 1)  # its earnings wallet exists
    rounds = []
    for i in range(ROUNDS):
        team = await new_workspace(client, consumer, f"Caller {i}")
        await plans.free_of_limits(team)
        secret = await _paying_key(client, admin, consumer, team, app_id)
        url = f"/api/v1/workspaces/{team}"
        rounds.append(Round(team, builder.workspace_id, app_id, secret, (url, consumer.headers)))
    await _race(app, client, rounds)


async def test_priced_calls_racing_the_deletion_of_the_apps_workspace(
    app: FastAPI, client: AsyncClient
) -> None:
    """Per round, a consumer calls the priced API of a builder's team workspace while the
    builder deletes that workspace (`force`: the app is in use): each call was charged (200)
    or found the app gone (404)."""
    admin = await make_admin(app, client)
    plans = Plans(client, admin)
    builder, consumer = await register(client), await register(client)
    await plans.free_of_limits(builder.workspace_id)
    await plans.free_of_limits(consumer.workspace_id)
    rounds = []
    for i in range(ROUNDS):
        team = await new_workspace(client, builder, f"Builder {i}")
        await plans.free_of_limits(team)
        app_id = await _priced_app(client, builder, team)
        await top_up(client, admin, team, 1)  # its earnings wallet exists
        secret = await _paying_key(client, admin, consumer, consumer.workspace_id, app_id)
        url = f"/api/v1/workspaces/{team}?force=true"
        deletion = (url, in_workspace(builder, team))
        rounds.append(Round(consumer.workspace_id, team, app_id, secret, deletion))
    await _race(app, client, rounds)


async def test_priced_calls_between_two_workspaces_of_an_account_racing_its_deletion(
    app: FastAPI, client: AsyncClient
) -> None:
    """Per round, a fresh account calls the priced API of its personal workspace from its other
    workspace while an administrator deletes the account (both workspaces, by its cascade):
    each call was charged (200) or found its key, workspace or app gone (401, 404)."""
    admin = await make_admin(app, client)
    plans = Plans(client, admin)
    rounds = []
    for i in range(ROUNDS):
        owner = await register(client)
        await plans.free_of_limits(owner.workspace_id)
        app_id = await _priced_app(client, owner, owner.workspace_id)
        await top_up(client, admin, owner.workspace_id, 1)  # its earnings wallet exists
        team = await new_workspace(client, owner, f"Caller {i}")
        await plans.free_of_limits(team)
        secret = await _paying_key(client, admin, owner, team, app_id)
        url = f"/api/v1/admin/users/{owner.account_id}?force=true"
        deletion = (url, admin.headers)
        rounds.append(Round(team, owner.workspace_id, app_id, secret, deletion))
    await _race(app, client, rounds)


async def test_a_charge_caught_between_an_accounts_two_workspaces_in_its_deletion(
    app: FastAPI, client: AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The moment the race above rarely hits, made certain (PostgreSQL): the deletion of an
    account holds the wallets of its personal workspace (the app's: the cascade detaches them
    first) when the account's call from its other workspace writes its charge, and only then
    cascades. Before, the call's entries held the caller's balance wallet while waiting for the
    builder's earnings wallet, the cascade then waited for the balance wallet: a deadlock,
    which PostgreSQL broke by failing the call (500, its charge rolled back). Now the deletion
    has locked all the account's wallets by id first and the charge takes them in that order:
    the call waits for the deletion and finds its workspace gone (404), charged nothing."""
    if app.state.engine.dialect.name != "postgresql":
        pytest.skip("row locks: SQLite has one writer")
    admin = await make_admin(app, client)
    plans = Plans(client, admin)
    owner = await register(client)
    await plans.free_of_limits(owner.workspace_id)
    app_id = await _priced_app(client, owner, owner.workspace_id)
    await top_up(client, admin, owner.workspace_id, 1)  # its earnings wallet exists
    team = await new_workspace(client, owner, "Caller")
    secret = await _paying_key(client, admin, owner, team, app_id)
    r = Round(team, owner.workspace_id, app_id, secret, ("", {}))
    before = await _wallets(app)
    calls: list[Any] = []

    async def cascading_after_a_call(session: Any, row: Any, precondition: Any) -> None:
        """As the cascade would, the personal workspace's wallets first; the call meanwhile."""
        await session.execute(
            select(Wallet.id).where(Wallet.workspace_id == owner.workspace_id).with_for_update()
        )
        calls.append(asyncio.ensure_future(_call(client, r, 0)))
        await asyncio.sleep(0.5)  # the call is waiting on a wallet row
        assert not calls[0].done(), calls[0].result().text
        await delete_row(session, row, precondition)

    monkeypatch.setattr(admin_service, "delete_row", cascading_after_a_call)
    url = f"/api/v1/admin/users/{owner.account_id}?force=true"
    deleted = await asyncio.wait_for(client.delete(url, headers=admin.headers), 30)
    answered = await asyncio.wait_for(calls[0], 30)
    assert (deleted.status_code, answered.status_code) == (200, 404), (deleted.text, answered.text)
    assert_error(answered, 404, answered.json()["data"]["error"])
    wallets = await ledger_invariants(app)
    for key in [(team, "balance"), (owner.workspace_id, "earnings")]:
        wallet_id, balance = before[key]
        assert wallets[wallet_id] == balance  # charged nothing
