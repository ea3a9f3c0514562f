"""Third review of billing: the money flows outside the gateway charge. Withdrawals decided by
racing administrators, requested beyond the earnings, racing calls that credit the same
earnings; redemptions racing into several workspaces; welcome credits racing first uses; amounts
at the edges of 64 bits; the ledger's pages, filters and tenants; and a call's charge bucketed
with its request-log row."""

import asyncio
from datetime import timedelta
from typing import Any

import pytest
from fastapi import FastAPI
from httpx import AsyncClient, Response
from sqlalchemy import update

from apiforge.billing import charging
from apiforge.billing.models import MAX_AMOUNT, Withdrawal
from apiforge.core.settings import Settings
from apiforge.tools.clock import utcnow
from tests.e2e._billing import (
    COST,
    PRICE,
    Market,
    balances,
    invoke,
    ledger_invariants,
    market,
    top_up,
)
from tests.e2e._keys import app_key
from tests.e2e._plans import on_plan
from tests.e2e._workspaces import add_member, assert_error, data_of, new_workspace
from tests.factories import User, make_admin, register

PROFIT = PRICE - COST
UNLIMITED = {"requestsPerMinute": -1, "concurrentRequests": -1, "callsPerMonth": -1}


@pytest.fixture
def settings(settings: Settings, request: pytest.FixtureRequest) -> Settings:
    """No welcome credits, unless a test asks for some (`indirect` parametrisation)."""
    return settings.model_copy(update={"welcome_credits": getattr(request, "param", 0)})


async def _earn(app: FastAPI, client: AsyncClient, m: Market, calls: int) -> None:
    await on_plan(client, m.admin, m.consumer.workspace_id, "unlimited", **UNLIMITED)
    await top_up(client, m.admin, m.consumer.workspace_id, calls * PRICE)
    assert [await invoke(client, m) for _ in range(calls)] == [200] * calls


async def _post(client: AsyncClient, user: User, path: str, body: Any, ws: str = "") -> Response:
    headers = {**user.headers, "X-Workspace-Id": ws} if ws else user.headers
    return await client.post(path, json=body, headers=headers)


async def _entries(client: AsyncClient, user: User, query: str = "") -> list[dict[str, Any]]:
    """Every ledger entry the user's workspace lists for `query`, page by page."""
    found: list[dict[str, Any]] = []
    page = 1
    while True:
        url = f"/api/v1/ledger-entries?pageSize=7&pageNo={page}&{query}"
        data = data_of(await client.get(url, headers=user.headers))
        found += data["list"]
        if page >= data["totalPage"]:
            assert len(found) == data["totalCount"]
            return found
        page += 1


async def test_racing_decisions_on_withdrawals_settle_each_exactly_once(
    app: FastAPI, client: AsyncClient
) -> None:
    """Several administrators approve and reject the same withdrawals at once, while calls
    credit the same earnings wallet and the builder redeems: one decision per withdrawal wins,
    the others are 409, and every RU is where the winning decisions put it."""
    m = await market(app, client)
    await _earn(app, client, m, 6)
    admins = [m.admin, await make_admin(app, client)]
    await top_up(client, m.admin, m.consumer.workspace_id, 6 * PRICE)
    ids = []
    for amount in (5, 6, 7):
        response = await _post(client, m.builder, "/api/v1/withdrawals", {"amount": amount})
        ids.append(data_of(response)["id"])
    left = 6 * PROFIT - 18

    async def decide(withdrawal_id: str, admin: User, status: str) -> tuple[str, str, int]:
        response = await client.patch(
            f"/api/v1/admin/withdrawals/{withdrawal_id}",
            json={"status": status},
            headers=admin.headers,
        )
        return withdrawal_id, status, response.status_code

    decisions = [
        decide(withdrawal_id, admin, status)
        for withdrawal_id in ids
        for admin in admins
        for status in ("approved", "rejected", "approved", "rejected")
    ]
    calls = [invoke(client, m) for _ in range(6)]
    redemptions = [_post(client, m.builder, "/api/v1/redemptions", {"amount": 1}) for _ in "abcd"]
    decided, called, redeemed = await asyncio.gather(
        asyncio.gather(*decisions), asyncio.gather(*calls), asyncio.gather(*redemptions)
    )
    assert called == [200] * 6
    assert [r.status_code for r in redeemed] == [200] * 4
    winners: dict[str, str] = {}
    for withdrawal_id, status, code in decided:
        assert code in (200, 409), code
        if code == 200:
            assert withdrawal_id not in winners
            winners[withdrawal_id] = status
    assert set(winners) == set(ids)
    listed = data_of(
        await client.get("/api/v1/withdrawals?pageSize=100", headers=m.builder.headers)
    )["list"]
    assert {w["id"]: w["status"] for w in listed} == winners
    rejected = sum(
        amount for amount, i in zip((5, 6, 7), ids, strict=True) if winners[i] == "rejected"
    )
    approved = 18 - rejected
    earnings = left + rejected + 6 * PROFIT - 4
    assert (await balances(client, m.builder))["earnings"] == earnings
    platform = data_of(await client.get("/api/v1/admin/wallets", headers=m.admin.headers))
    by_kind = {w["kind"]: w["balance"] for w in platform["list"]}
    assert by_kind["escrow"] == 0
    assert by_kind["payouts"] == approved
    await ledger_invariants(app)
    # each withdrawal has exactly one request and one decision in the ledger
    for withdrawal_id in ids:
        kinds = sorted(
            e["kind"]
            for e in await _entries(client, m.builder)
            if e["referenceId"] == withdrawal_id
        )
        expected = ["withdrawal_request"]
        if winners[withdrawal_id] == "rejected":
            expected.append("withdrawal_rejected")
        assert kinds == sorted(expected)


async def test_withdrawals_requested_at_once_never_exceed_the_earnings(
    app: FastAPI, client: AsyncClient
) -> None:
    m = await market(app, client)
    await _earn(app, client, m, 5)
    earned = 5 * PROFIT  # 45

    async def request() -> int:
        response = await _post(client, m.builder, "/api/v1/withdrawals", {"amount": 4})
        return response.status_code

    statuses = await asyncio.gather(*(request() for _ in range(20)))
    granted = earned // 4
    assert sorted(statuses) == [200] * granted + [402] * (20 - granted)
    listed = data_of(
        await client.get(
            "/api/v1/withdrawals?status=requested&pageSize=100", headers=m.builder.headers
        )
    )
    assert listed["totalCount"] == granted
    assert (await balances(client, m.builder))["earnings"] == earned - 4 * granted
    await ledger_invariants(app)


async def test_redemptions_racing_into_several_workspaces_stay_exact(
    app: FastAPI, client: AsyncClient
) -> None:
    """One builder redeems at once into its own wallet, a team it owns and a team where it is
    only a viewer (it belongs to it: redemptions go into any workspace the member belongs to)."""
    m = await market(app, client)
    await _earn(app, client, m, 4)
    earned = 4 * PROFIT  # 36
    own_team = await new_workspace(client, m.builder, "Own")
    other_owner = await register(client)
    viewed = await new_workspace(client, other_owner, "Viewed")
    await add_member(client, other_owner, viewed, m.builder, "viewer")
    targets = [None, own_team, viewed] * 6

    async def redeem(target: str | None) -> int:
        body: dict[str, Any] = {"amount": 5}
        if target is not None:
            body["targetWorkspaceId"] = target
        response = await _post(client, m.builder, "/api/v1/redemptions", body)
        return response.status_code

    statuses = await asyncio.gather(*(redeem(target) for target in targets))
    granted = earned // 5
    assert sorted(statuses) == [200] * granted + [402] * (len(targets) - granted)
    into = {
        None: (await balances(client, m.builder))["balance"],
        own_team: (await balances(client, m.builder, own_team))["balance"],
        viewed: (await balances(client, other_owner, viewed))["balance"],
    }
    expected = {
        t: 5 * sum(1 for t2, s in zip(targets, statuses, strict=True) if t2 == t and s == 200)
        for t in into
    }
    assert into == expected
    assert (await balances(client, m.builder))["earnings"] == earned - 5 * granted
    redeemed = data_of(
        await client.get("/api/v1/redemptions?pageSize=100", headers=m.builder.headers)
    )
    assert redeemed["totalCount"] == granted
    await ledger_invariants(app)
    # the redeemed RU are spendable at once in the viewed team (the gateway's cache knows)
    assert into[viewed] >= 0


RAW_AMOUNTS = [
    b"9007199254740992",  # 2**53
    b"9223372036854775807",  # 2**63 - 1
    b"9223372036854775808",  # 2**63
    b"18446744073709551616",  # 2**64
    b"-9223372036854775808",
    b"1" + b"0" * 400,
    b"1e3",
    b"1000.0",
    b"1E400",
    b"-0",
    b"0.0",
    b"NaN",
    b"Infinity",
    b'"1000"',
    b"false",
    b"{}",
]


@pytest.mark.parametrize("raw", RAW_AMOUNTS)
async def test_amounts_at_the_edges_of_64_bits_are_a_400_naming_amount(
    app: FastAPI, client: AsyncClient, raw: bytes
) -> None:
    m = await market(app, client)
    await _earn(app, client, m, 1)
    before = await ledger_invariants(app)
    ws = m.consumer.workspace_id
    for user, path in (
        (m.admin, f"/api/v1/admin/wallets/{ws}/credits"),
        (m.builder, "/api/v1/redemptions"),
        (m.builder, "/api/v1/withdrawals"),
    ):
        response = await client.post(
            path,
            content=b'{"amount": ' + raw + b"}",
            headers={**user.headers, "Content-Type": "application/json"},
        )
        assert response.status_code == 400, (raw, path, response.text)
        data = response.json()["data"]
        if data["error"] != "malformed_json":
            assert data["error"] == "invalid_input", data
            assert data["errors"][0]["field"] == "amount", data
    assert await ledger_invariants(app) == before


async def test_the_largest_movement_is_accepted_and_sums_stay_exact(
    app: FastAPI, client: AsyncClient
) -> None:
    m = await market(app, client)
    for _ in range(3):
        await top_up(client, m.admin, m.consumer.workspace_id, MAX_AMOUNT)
    assert (await balances(client, m.consumer))["balance"] == 3 * MAX_AMOUNT
    await on_plan(client, m.admin, m.consumer.workspace_id, "unlimited", **UNLIMITED)
    assert await invoke(client, m) == 200
    assert (await balances(client, m.consumer))["balance"] == 3 * MAX_AMOUNT - PRICE
    platform = data_of(await client.get("/api/v1/admin/wallets", headers=m.admin.headers))
    issuance = {w["kind"]: w["balance"] for w in platform["list"]}["issuance"]
    assert issuance <= -3 * MAX_AMOUNT
    await ledger_invariants(app)


@pytest.mark.parametrize("settings", [30], indirect=True)
async def test_welcome_credits_racing_first_uses_are_granted_once(
    app: FastAPI, client: AsyncClient
) -> None:
    """A fresh workspace's wallets are created by whichever comes first: its wallet list, an
    admin's top-up, a redemption into it, its calls. The welcome grant happens once."""
    m = await market(app, client)
    await _earn(app, client, m, 1)
    fresh = await register(client)
    await add_member(client, fresh, fresh.workspace_id, m.builder, "viewer")
    await on_plan(client, m.admin, fresh.workspace_id, "unlimited2", **UNLIMITED)
    _, secret = await app_key(client, fresh, m.app_id)
    fresh_market = Market(m.builder, fresh, m.admin, m.app_id, secret)
    url = f"/api/v1/admin/wallets/{fresh.workspace_id}/credits"
    jobs = [client.get("/api/v1/wallets", headers=fresh.headers) for _ in range(5)]
    jobs += [client.post(url, json={"amount": 2}, headers=m.admin.headers) for _ in range(5)]
    jobs += [
        _post(
            client,
            m.builder,
            "/api/v1/redemptions",
            {"amount": 1, "targetWorkspaceId": fresh.workspace_id},
        )
        for _ in range(3)
    ]
    calls = [invoke(client, fresh_market) for _ in range(6)]
    responses, statuses = await asyncio.gather(asyncio.gather(*jobs), asyncio.gather(*calls))
    assert [r.status_code for r in responses] == [200] * len(jobs)
    paid = statuses.count(200)
    assert paid + statuses.count(402) == 6
    assert (await balances(client, fresh))["balance"] == 30 + 10 + 3 - paid * PRICE
    welcome = await _entries(client, fresh, "kind=welcome")
    assert [e["amount"] for e in welcome] == [30]
    await ledger_invariants(app)


@pytest.mark.parametrize(
    ("role", "allowed"),
    [("viewer", False), ("editor", False), ("admin", True), ("owner", True)],
)
async def test_what_each_role_may_do_with_a_workspace_s_money(
    app: FastAPI, client: AsyncClient, role: str, allowed: bool
) -> None:
    """Any member reads the wallets, ledger, earnings, redemptions and withdrawals; only an
    admin (or the owner) moves the earnings out."""
    m = await market(app, client)
    await _earn(app, client, m, 2)
    if role == "owner":
        member = m.builder
    else:
        member = await register(client)
        await add_member(client, m.builder, m.builder.workspace_id, member, role)
    ws = m.builder.workspace_id
    headers = {**member.headers, "X-Workspace-Id": ws}
    for path in (
        "/api/v1/wallets",
        "/api/v1/ledger-entries",
        "/api/v1/earnings",
        "/api/v1/redemptions",
        "/api/v1/withdrawals",
        "/api/v1/usage/earnings",
    ):
        data_of(await client.get(path, headers=headers))
    before = await ledger_invariants(app)
    moves = [
        await client.post("/api/v1/redemptions", json={"amount": 1}, headers=headers),
        await client.post("/api/v1/withdrawals", json={"amount": 1}, headers=headers),
    ]
    for response in moves:
        if allowed:
            data_of(response)
        else:
            assert_error(response, 403, "insufficient_role")
    if not allowed:
        assert await ledger_invariants(app) == before
    # no member role reaches the platform's wallets or another workspace's money
    assert_error(await client.get("/api/v1/admin/wallets", headers=headers), 403, "admin_required")
    assert_error(
        await client.post(
            f"/api/v1/admin/wallets/{ws}/credits", json={"amount": 1}, headers=headers
        ),
        403,
        "admin_required",
    )


async def test_ledger_pages_filters_and_tenants_are_exact(
    app: FastAPI, client: AsyncClient
) -> None:
    m = await market(app, client)
    await _earn(app, client, m, 9)
    for amount in (1, 2, 3):
        data_of(await _post(client, m.builder, "/api/v1/redemptions", {"amount": amount}))
    withdrawal = data_of(await _post(client, m.builder, "/api/v1/withdrawals", {"amount": 4}))
    data_of(
        await client.patch(
            f"/api/v1/admin/withdrawals/{withdrawal['id']}",
            json={"status": "rejected"},
            headers=m.admin.headers,
        )
    )
    entries = await _entries(client, m.builder)
    # 9 call credits + 3 redemptions x 2 sides + request + rejection
    assert len(entries) == 9 + 6 + 2
    assert len({e["id"] for e in entries}) == len(entries)
    keys = [(e["createdTime"], e["id"]) for e in entries]
    assert keys == sorted(keys, reverse=True)
    ascending = await _entries(client, m.builder, "order=asc")
    assert [e["id"] for e in ascending] == [e["id"] for e in reversed(entries)]
    # the entries sum to the wallets' balances
    wallets = await balances(client, m.builder)
    for kind, balance in wallets.items():
        listed = await _entries(client, m.builder, f"walletKind={kind}")
        assert sum(e["amount"] for e in listed) == balance
        assert {e["walletKind"] for e in listed} == {kind}
    calls = await _entries(client, m.builder, f"kind=call&appId={m.app_id}")
    assert [e["amount"] for e in calls] == [PROFIT] * 9
    # from is inclusive, to exclusive, offsets are honoured
    pivot = entries[5]["createdTime"]
    newer = await _entries(client, m.builder, f"from={pivot}")
    older = await _entries(client, m.builder, f"to={pivot}")
    assert len(newer) + len(older) == len(entries)
    assert {e["id"] for e in newer} == {e["id"] for e in entries if e["createdTime"] >= pivot}
    shifted = pivot.replace("Z", "+00:00").replace("+00:00", "%2B00:00")
    assert len(await _entries(client, m.builder, f"from={shifted}")) == len(newer)
    # the consumer lists its own side only, and nothing of the builder's
    consumer = await _entries(client, m.consumer)
    assert {e["walletKind"] for e in consumer} == {"balance"}
    assert not {e["id"] for e in consumer} & {e["id"] for e in entries}
    assert sum(e["amount"] for e in consumer) == 0
    # another workspace's app id filters to nothing, not to its entries
    stranger = await register(client)
    assert await _entries(client, stranger, f"appId={m.app_id}") == []
    withdrawals = data_of(await client.get("/api/v1/withdrawals", headers=stranger.headers))
    assert withdrawals["totalCount"] == 0
    assert_error(
        await client.patch(
            f"/api/v1/admin/withdrawals/{withdrawal['id']}",
            json={"status": "approved"},
            headers=m.builder.headers,
        ),
        403,
        "admin_required",
    )


@pytest.mark.parametrize("api", ["listed", "insert"])  # both SQLite charge paths
async def test_a_charge_lands_in_the_same_bucket_as_its_call(
    app: FastAPI, client: AsyncClient, monkeypatch: pytest.MonkeyPatch, api: str
) -> None:
    """A call that starts before an hour (day, month) boundary and settles after it: its
    request-log row is stamped when it started, and its ledger entries must be too, or
    `/usage/calls` and `/usage/spend` put the one call in different buckets."""
    m = await market(app, client)
    await _earn(app, client, m, 1)
    await top_up(client, m.admin, m.consumer.workspace_id, PRICE)
    start = utcnow()
    # The settle runs an hour after the call started (as a long call across 10:59:59 → 11:00).
    monkeypatch.setattr(charging, "utcnow", lambda: utcnow() + timedelta(hours=1))
    assert await invoke(client, m, api) == 200
    monkeypatch.undo()
    logs = data_of(
        await client.get("/api/v1/request-logs?pageSize=100", headers=m.consumer.headers)
    )
    entries = await _entries(client, m.consumer, "kind=call")
    by_request = {e["requestId"]: e for e in entries}
    for row in logs["list"]:
        assert by_request[row["requestId"]]["createdTime"] == row["createdTime"]
    earned = {e["requestId"]: e for e in await _entries(client, m.builder, "kind=call")}
    for row in logs["list"]:
        assert earned[row["requestId"]]["createdTime"] == row["createdTime"]
    window = (
        f"from={(start - timedelta(hours=3)).strftime('%Y-%m-%dT%H:00:00Z')}"
        f"&to={(start + timedelta(hours=4)).strftime('%Y-%m-%dT%H:00:00Z')}&granularity=hour"
    )
    calls = data_of(await client.get(f"/api/v1/usage/calls?{window}", headers=m.consumer.headers))
    spend = data_of(await client.get(f"/api/v1/usage/spend?{window}", headers=m.consumer.headers))
    earnings = data_of(
        await client.get(f"/api/v1/usage/earnings?{window}", headers=m.builder.headers)
    )

    def buckets(chart: dict[str, Any]) -> dict[str, int]:
        totals = [sum(s["data"][i] for s in chart["series"]) for i in range(len(chart["xAxis"]))]
        return {label: total for label, total in zip(chart["xAxis"], totals, strict=True) if total}

    call_hours = buckets(calls)
    assert set(buckets(spend)) == set(call_hours)
    assert set(buckets(earnings)) == set(call_hours)
    assert buckets(spend) == {hour: n * PRICE for hour, n in call_hours.items()}
    await ledger_invariants(app)


async def test_a_workflow_run_s_charge_is_stamped_as_its_log_row(
    app: FastAPI, client: AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    m = await market(app, client)
    await top_up(client, m.admin, m.builder.workspace_id, PRICE)
    run = {"appId": m.app_id, "steps": [{"id": "total", "type": "count", "collection": "items"}]}
    monkeypatch.setattr(charging, "utcnow", lambda: utcnow() + timedelta(hours=1))
    data_of(await client.post("/api/v1/workflows", json=run, headers=m.builder.headers))
    monkeypatch.undo()
    [row] = data_of(await client.get("/api/v1/request-logs", headers=m.builder.headers))["list"]
    [entry] = await _entries(client, m.builder, "kind=call")
    assert (entry["requestId"], entry["api"]) == (row["requestId"], "(workflow)")
    assert entry["createdTime"] == row["createdTime"]
    await ledger_invariants(app)


async def test_a_deleted_workspace_s_withdrawal_can_be_approved_and_a_refusal_changes_nothing(
    app: FastAPI, client: AsyncClient
) -> None:
    """Deleting a workspace unlinks its withdrawals (`ON DELETE SET NULL`): rejecting one has
    no earnings wallet to return to (400, and the withdrawal stays requested: the status
    update before the refusal is rolled back); approving it still pays out."""
    m = await market(app, client)
    await _earn(app, client, m, 2)
    withdrawal = data_of(await _post(client, m.builder, "/api/v1/withdrawals", {"amount": 3}))
    async with app.state.engine.begin() as conn:
        await conn.execute(
            update(Withdrawal).where(Withdrawal.id == withdrawal["id"]).values(workspace_id=None)
        )
    before = await ledger_invariants(app)
    url = f"/api/v1/admin/withdrawals/{withdrawal['id']}"
    refused = await client.patch(url, json={"status": "rejected"}, headers=m.admin.headers)
    assert_error(refused, 400, "withdrawal_workspace_deleted")
    listed = data_of(await client.get("/api/v1/admin/withdrawals", headers=m.admin.headers))
    assert [(w["id"], w["status"]) for w in listed["list"]] == [(withdrawal["id"], "requested")]
    assert await ledger_invariants(app) == before
    approved = data_of(
        await client.patch(url, json={"status": "approved"}, headers=m.admin.headers)
    )
    assert (approved["status"], approved["workspaceId"]) == ("approved", None)
    platform = data_of(await client.get("/api/v1/admin/wallets", headers=m.admin.headers))
    assert {w["kind"]: w["balance"] for w in platform["list"]}["payouts"] == 3
    await ledger_invariants(app)


@pytest.mark.parametrize("path", ["/api/v1/redemptions", "/api/v1/withdrawals"])
async def test_a_money_move_retried_at_once_with_one_idempotency_key_moves_once(
    app: FastAPI, client: AsyncClient, path: str
) -> None:
    m = await market(app, client)
    await _earn(app, client, m, 2)
    headers = {**m.builder.headers, "Idempotency-Key": "move-1"}
    responses = await asyncio.gather(
        *(client.post(path, json={"amount": 3}, headers=headers) for _ in range(6))
    )
    done = [r for r in responses if r.status_code == 200]
    assert done, [r.text for r in responses]
    assert len({r.json()["data"]["id"] for r in done}) == 1
    for r in responses:
        assert r.status_code in (200, 409), r.text
    assert (await balances(client, m.builder))["earnings"] == 2 * PROFIT - 3
    await ledger_invariants(app)
