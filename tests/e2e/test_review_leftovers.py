"""Leftovers of the reviews: an expired session can't be ended (404, as it is not listed), every
ledger posting is bounded by `MAX_AMOUNT`, rejecting a withdrawal never creates wallets, an
empty `sort=` is an absent one on every list, and the password change's throttle counts the
client address sign-in counts."""

from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import jwt
import pytest
from fastapi import FastAPI
from httpx import ASGITransport, AsyncClient
from sqlalchemy import func, select, update

from apiforge.accounts.models import LoginSession, RefreshToken
from apiforge.billing.ledger import Leg, post
from apiforge.billing.models import MAX_AMOUNT, PLATFORM_WALLETS, LedgerEntry, Wallet, Withdrawal
from apiforge.core.db import session_scope
from apiforge.tools.clock import utcnow
from tests.e2e._accounts import SESSIONS_PATH, bearer, change_password, login
from tests.e2e._apps import new_api, new_app, set_step
from tests.e2e._billing import balances, invoke, ledger_invariants, market, top_up
from tests.e2e._workspaces import assert_error, data_of
from tests.factories import PASSWORD, User, make_admin, register


def _sid(access_token: str) -> str:
    claims = jwt.decode(access_token, options={"verify_signature": False})
    sid: str = claims["sid"]
    return sid


async def _count(app: FastAPI, model: Any, *where: Any) -> int:
    async with app.state.engine.connect() as conn:
        return int(await conn.scalar(select(func.count()).select_from(model).where(*where)) or 0)


# --- 1. ending a session that has expired -------------------------------------------------------


async def _revoked_at(app: FastAPI, session_id: str) -> Any:
    async with app.state.engine.connect() as conn:
        return await conn.scalar(
            select(LoginSession.revoked_at).where(LoginSession.id == session_id)
        )


async def test_a_session_past_its_lifetime_or_its_refresh_token_is_not_found_to_end(
    app: FastAPI, client: AsyncClient
) -> None:
    """Expired sessions are not listed, so ending one is the 404 of any id the list doesn't
    show (it answered 200 and wrote an ending), and nothing is written."""
    user = await register(client)
    aged = _sid(data_of(await login(client, user.email))["accessToken"])
    lapsed = _sid(data_of(await login(client, user.email))["accessToken"])
    live = _sid(data_of(await login(client, user.email))["accessToken"])
    max_days = app.state.settings.session_max_days
    async for session in session_scope(app.state.sessionmaker):
        # Past the maximum lifetime (its refresh token left as it was) ...
        await session.execute(
            update(LoginSession)
            .where(LoginSession.id == aged)
            .values(created_at=utcnow() - timedelta(days=max_days, minutes=1))
        )
        # ... and left alone past its refresh token's expiry.
        await session.execute(
            update(RefreshToken)
            .where(RefreshToken.session_id == lapsed)
            .values(expires_at=utcnow() - timedelta(minutes=1))
        )
    listed = data_of(await client.get(SESSIONS_PATH, headers=user.headers))
    assert aged not in {row["id"] for row in listed["list"]}
    assert lapsed not in {row["id"] for row in listed["list"]}
    for expired in (aged, lapsed):
        response = await client.delete(f"{SESSIONS_PATH}/{expired}", headers=user.headers)
        assert_error(response, 404, "session_not_found")
        assert await _revoked_at(app, expired) is None
    # A live session is still ended, once.
    assert data_of(await client.delete(f"{SESSIONS_PATH}/{live}", headers=user.headers)) == {
        "id": live
    }
    assert await _revoked_at(app, live) is not None
    again = await client.delete(f"{SESSIONS_PATH}/{live}", headers=user.headers)
    assert_error(again, 404, "session_not_found")


# --- 2. one bound for every ledger posting ------------------------------------------------------


async def _balance_wallet(client: AsyncClient, user: User) -> str:
    listed = data_of(await client.get("/api/v1/wallets", headers=user.headers))
    wallet_id: str = next(w["id"] for w in listed["list"] if w["kind"] == "balance")
    return wallet_id


async def test_no_posting_moves_more_than_max_amount_or_a_non_whole_amount(
    app: FastAPI, client: AsyncClient
) -> None:
    """`ledger.post` is the one writer of every movement but a call's charge (bounded by
    `charging.split`): it refuses, writing nothing, a movement above `MAX_AMOUNT` — in one leg,
    or spread over legs that each stay under it — and amounts that are not whole RU."""
    admin = await make_admin(app, client)
    a, b, c = await register(client), await register(client), await register(client)
    wallets = {user.workspace_id: await _balance_wallet(client, user) for user in (a, b, c)}
    for user in (a, b):
        await top_up(client, admin, user.workspace_id, MAX_AMOUNT)
    issuance = PLATFORM_WALLETS["issuance"]
    half: Any = 0.5  # not an int, whatever the annotation says
    refused = [
        [
            Leg(issuance, None, -(MAX_AMOUNT + 1)),
            Leg(wallets[c.workspace_id], c.workspace_id, MAX_AMOUNT + 1),
        ],
        [
            Leg(wallets[a.workspace_id], a.workspace_id, -MAX_AMOUNT),
            Leg(wallets[b.workspace_id], b.workspace_id, -MAX_AMOUNT),
            Leg(wallets[c.workspace_id], c.workspace_id, MAX_AMOUNT),
            Leg(issuance, None, MAX_AMOUNT),
        ],
        [
            Leg(issuance, None, -half),
            Leg(wallets[c.workspace_id], c.workspace_id, half),
        ],
    ]
    before = await ledger_invariants(app)
    entries = await _count(app, LedgerEntry)
    for legs in refused:
        async with app.state.engine.connect() as conn:
            with pytest.raises(ValueError, match=r"MAX_AMOUNT|whole amount"):
                await post(conn, legs, kind="topup")
            await conn.commit()
    assert await ledger_invariants(app) == before
    assert await _count(app, LedgerEntry) == entries
    # The largest movement allowed still posts.
    async with app.state.engine.begin() as conn:
        await post(
            conn,
            [
                Leg(issuance, None, -MAX_AMOUNT),
                Leg(wallets[c.workspace_id], c.workspace_id, MAX_AMOUNT),
            ],
            kind="topup",
        )
    assert await _count(app, LedgerEntry) == entries + 2
    await ledger_invariants(app)


# --- 3. rejecting a withdrawal looks its wallet up, never creates one ---------------------------


async def test_rejecting_a_withdrawal_whose_wallets_went_creates_none_and_changes_nothing(
    app: FastAPI, client: AsyncClient
) -> None:
    """An account deletion committed while an administrator's rejection runs detaches the
    workspace's wallets after the withdrawal was read: the rejection then found no wallets and
    created new ones (and would grant welcome credits into them), returning the RU to a wallet
    nobody had. It is now the 400 of a deleted workspace's withdrawal, and nothing changes."""
    m = await market(app, client)
    assert await invoke(client, m) == 200
    assert (await balances(client, m.builder))["earnings"] > 4
    withdrawal = data_of(
        await client.post("/api/v1/withdrawals", json={"amount": 4}, headers=m.builder.headers)
    )
    # The state such a race leaves: the withdrawal still names the workspace, whose wallets a
    # deletion detached (`wallets.workspace_id` is SET NULL).
    async with app.state.engine.begin() as conn:
        await conn.execute(
            update(Wallet)
            .where(Wallet.workspace_id == m.builder.workspace_id)
            .values(workspace_id=None)
        )
    wallets = await _count(app, Wallet)
    entries = await _count(app, LedgerEntry)
    before = await ledger_invariants(app)
    rejected = await client.patch(
        f"/api/v1/admin/withdrawals/{withdrawal['id']}",
        json={"status": "rejected"},
        headers=m.admin.headers,
    )
    assert_error(rejected, 400, "withdrawal_workspace_deleted")
    assert await _count(app, Wallet) == wallets
    assert await _count(app, Wallet, Wallet.workspace_id == m.builder.workspace_id) == 0
    assert await _count(app, LedgerEntry) == entries
    assert await ledger_invariants(app) == before
    status = await _count(
        app, Withdrawal, Withdrawal.id == withdrawal["id"], Withdrawal.status == "requested"
    )
    assert status == 1
    # It can still be approved: the RU leave through the payouts wallet.
    approved = await client.patch(
        f"/api/v1/admin/withdrawals/{withdrawal['id']}",
        json={"status": "approved"},
        headers=m.admin.headers,
    )
    assert data_of(approved)["status"] == "approved"
    await ledger_invariants(app)


# --- 4. an empty `sort=` is an absent one ------------------------------------------------------


async def test_an_empty_sort_is_the_default_order_on_every_list(
    app: FastAPI, client: AsyncClient
) -> None:
    """As `pageNo=`, `pageSize=` and `order=`: an empty value is the default. A dataset's
    records listed with `sort=` came oldest first while their default is newest first."""
    user = await register(client)
    app_id = await new_app(client, user.headers, "Shop")
    body = {"appId": app_id, "name": "items", "fields": [{"name": "n", "type": "integer"}]}
    dataset_id = data_of(await client.post("/api/v1/datasets", json=body, headers=user.headers))[
        "id"
    ]
    records = f"/api/v1/datasets/{dataset_id}/records"
    for n in range(3):
        data_of(await client.post(records, json={"n": n}, headers=user.headers))
    for n in range(2):
        data_of(await login(client, user.email))
        await new_api(client, user.headers, app_id, f"ping{n}", steps=[set_step("a", n)])
        response = await client.post(
            f"/api/v1/apps/{app_id}/versions",
            json={"bump": "patch", "notes": str(n)},
            headers=user.headers,
        )
        data_of(response)
    data_of(await client.post("/api/v1/workspaces", json={"name": "Team"}, headers=user.headers))
    listed = data_of(await client.get(records, headers=user.headers))["list"]
    assert [row["n"] for row in listed] == [2, 1, 0]
    paths = [records, SESSIONS_PATH, f"/api/v1/apps/{app_id}/versions", "/api/v1/workspaces"]
    for path in paths:

        async def shown(query: str, path: str = path) -> list[Any]:
            return list(data_of(await client.get(f"{path}?{query}", headers=user.headers))["list"])

        default = await shown("")
        assert len(default) >= 1, path
        for query in ("sort=", "sort=&order=", "sort=&pageNo=&pageSize="):
            assert await shown(query) == default, (path, query)
        bogus = await client.get(f"{path}?sort=bogus", headers=user.headers)
        assert assert_error(bogus, 400, "invalid_sort_field")["errors"][0]["field"] == "sort"


# --- 5. the password change counts the address sign-in counts --------------------------------

# A peer that is no IP address and longer than the 45 characters a session records: a Unix
# socket path, as some servers and proxies give it.
LONG_PEER = "/run/apiforge/" + "gateway-behind-a-local-proxy-" * 2 + ".sock"


@pytest.fixture
async def from_long_peer(app: FastAPI) -> AsyncIterator[AsyncClient]:
    assert len(LONG_PEER) > 45
    transport = ASGITransport(app=app, raise_app_exceptions=False, client=(LONG_PEER, 50000))
    async with AsyncClient(transport=transport, base_url="http://testserver") as http:
        yield http


async def test_failed_sign_ins_throttle_a_password_change_from_the_same_long_address(
    app: FastAPI, client: AsyncClient, from_long_peer: AsyncClient
) -> None:
    """Sign-in counted the address cut to 45 characters, the password change the whole one:
    from such a peer, the two kept separate failure windows. They share one now."""
    target, other = await register(client), await register(client)
    token = data_of(await login(from_long_peer, other.email))["accessToken"]
    max_failures = app.state.settings.login_max_failures
    for _ in range(max_failures):
        failed = await login(from_long_peer, target.email, "not the password")
        assert_error(failed, 401, "invalid_credentials")
    # The IP's window is full: another account's password change from there waits too.
    throttled = await change_password(from_long_peer, token, PASSWORD)
    assert_error(throttled, 429, "login_throttled")
    assert throttled.headers["Retry-After"]
    # From another address the change goes through.
    other_token = data_of(await login(client, other.email))["accessToken"]
    data_of(await change_password(client, other_token, PASSWORD))
    data_of(await client.get("/api/v1/user/profile", headers=bearer(other_token)))
