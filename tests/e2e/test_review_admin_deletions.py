"""Review of what disabling and deleting an account does: sign-ins racing a disable or a
delete, deleting the owner of apps other workspaces use (`force`), what the cascade misses
(records of its workspaces in other apps' collections, run-time indexes), and the money records
that must outlive it."""

import asyncio
import threading
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import Any

import pytest
from fastapi import FastAPI
from httpx import AsyncClient, Response
from sqlalchemy import func, select

from apiforge.accounts import service as account_service
from apiforge.accounts.models import Account, LoginSession
from apiforge.accounts.passwords import Verdict, check_console_password
from apiforge.billing.models import LedgerEntry, Wallet, Withdrawal
from apiforge.core.db import unit_of_work
from apiforge.datasets.models import Record
from apiforge.datasets.sql import existing_indexes
from apiforge.keys.models import ApiKey, Subscription
from apiforge.workspaces.models import Workspace
from apiforge.workspaces.service import WorkspaceService
from tests.e2e._billing import ledger_invariants, market, top_up
from tests.e2e._keys import app_key, call, notes_app, subscribe
from tests.e2e._workspaces import assert_error, data_of, new_workspace
from tests.factories import PASSWORD, make_admin, register

USERS = "/api/v1/admin/users"


async def _count(app: FastAPI, model: Any, *where: Any) -> int:
    async with unit_of_work(app.state.sessionmaker) as session:
        stmt = select(func.count()).select_from(model).where(*where)
        return int(await session.scalar(stmt) or 0)


async def _live_sessions(app: FastAPI, account_id: str) -> int:
    return await _count(
        app,
        LoginSession,
        LoginSession.account_id == account_id,
        LoginSession.revoked_at.is_(None),
    )


async def _login_racing(
    client: AsyncClient,
    monkeypatch: pytest.MonkeyPatch,
    email: str,
    action: Callable[[], Awaitable[None]],
) -> Response:
    """A sign-in whose (threaded) argon2 check is under way while `action()` runs to
    completion: the check waits for it, then gives its real answer."""
    entered, released = threading.Event(), threading.Event()

    def held(stored: str | None, password: str) -> Verdict:
        entered.set()
        released.wait(10)
        return check_console_password(stored, password)

    monkeypatch.setattr(account_service, "check_console_password", held)
    try:
        login = asyncio.create_task(
            client.post("/api/v1/auth/login", json={"email": email, "password": PASSWORD})
        )
        assert await asyncio.to_thread(entered.wait, 10)
        monkeypatch.setattr(account_service, "check_console_password", check_console_password)
        await action()
    finally:
        released.set()
    return await login


# --- disabling and signing in at once -------------------------------------------------------


async def test_a_sign_in_checking_its_password_while_the_account_is_disabled_is_refused(
    app: FastAPI, client: AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    admin = await make_admin(app, client)
    user = await register(client)

    async def disable() -> None:
        body = {"status": "disabled"}
        data_of(await client.patch(f"{USERS}/{user.account_id}", json=body, headers=admin.headers))

    login = await _login_racing(client, monkeypatch, user.email, disable)
    assert_error(login, 403, "account_disabled")
    # No session started behind the disabling's back...
    assert await _live_sessions(app, user.account_id) == 0
    # ...so enabling revives nothing: only a new sign-in works.
    body = {"status": "active"}
    data_of(await client.patch(f"{USERS}/{user.account_id}", json=body, headers=admin.headers))
    assert await _live_sessions(app, user.account_id) == 0
    fresh = await client.post(
        "/api/v1/auth/login", json={"email": user.email, "password": PASSWORD}
    )
    assert data_of(fresh)["accountId"] == user.account_id


async def test_a_sign_in_checking_its_password_while_the_account_is_deleted_is_401(
    app: FastAPI, client: AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    admin = await make_admin(app, client)
    user = await register(client)

    async def delete() -> None:
        data_of(await client.delete(f"{USERS}/{user.account_id}", headers=admin.headers))

    login = await _login_racing(client, monkeypatch, user.email, delete)
    assert_error(login, 401, "invalid_credentials")
    assert await _count(app, Account, Account.id == user.account_id) == 0
    assert await _count(app, LoginSession, LoginSession.account_id == user.account_id) == 0


async def test_a_refresh_racing_a_disable_gives_nothing_usable(
    app: FastAPI, client: AsyncClient
) -> None:
    admin = await make_admin(app, client)
    user = await register(client)
    body = {"status": "disabled"}
    refreshed, disabled = await asyncio.gather(
        client.post("/api/v1/auth/refresh", json={"refreshToken": user.refresh_token}),
        client.patch(f"{USERS}/{user.account_id}", json=body, headers=admin.headers),
    )
    data_of(disabled)
    assert await _live_sessions(app, user.account_id) == 0
    data_of(
        await client.patch(
            f"{USERS}/{user.account_id}", json={"status": "active"}, headers=admin.headers
        )
    )
    if refreshed.status_code == 200:  # it won the race: its tokens died with the session
        tokens = data_of(refreshed)
        headers = {"Authorization": f"Bearer {tokens['accessToken']}"}
        assert_error(
            await client.get("/api/v1/user/profile", headers=headers), 401, "session_revoked"
        )
        again = await client.post(
            "/api/v1/auth/refresh", json={"refreshToken": tokens["refreshToken"]}
        )
        assert_error(again, 401, "session_revoked")
    else:
        assert refreshed.status_code == 401


# --- deleting the owner of apps other workspaces use ----------------------------------------


async def test_deleting_the_owner_of_an_app_others_use_needs_force(
    app: FastAPI, client: AsyncClient
) -> None:
    admin = await make_admin(app, client)
    builder = await register(client)
    consumer = await register(client)
    app_id = await notes_app(client, builder, visibility="public")
    _, secret = await app_key(client, consumer, app_id)
    data_of(await call(client, secret, app_id, "addNote", {"text": "the consumer's"}))
    keys_before = await _count(app, ApiKey)

    refused = await client.delete(f"{USERS}/{builder.account_id}", headers=admin.headers)
    data = assert_error(refused, 409, "app_in_use")
    assert data["subscribers"] == 1
    # Nothing went: the account, its workspace, the consumer's key and records.
    assert await _count(app, Account, Account.id == builder.account_id) == 1
    assert await _count(app, Workspace, Workspace.id == builder.workspace_id) == 1
    assert await _count(app, ApiKey) == keys_before
    assert await _count(app, Record, Record.partition == consumer.workspace_id) == 1
    data_of(await call(client, secret, app_id, "echo", {"text": "still here"}))
    # Nor for a non-admin asking with force.
    user = await register(client)
    forced = f"{USERS}/{builder.account_id}?force=true"
    assert_error(await client.delete(forced, headers=user.headers), 403, "admin_required")
    assert await _count(app, Account, Account.id == builder.account_id) == 1

    deleted = await client.delete(forced, headers=admin.headers)
    assert data_of(deleted) == {"id": builder.account_id}
    assert await _count(app, Account, Account.id == builder.account_id) == 0
    assert await _count(app, Subscription, Subscription.app_id == app_id) == 0
    assert await _count(app, Record, Record.partition == consumer.workspace_id) == 0
    # At once on this node (its caches forget the deleted apps), never a 500 in the meantime.
    gone = await call(client, secret, app_id, "addNote", {"text": "gone"})
    assert_error(gone, 404, "app_not_found")
    assert (await client.get("/api/v1/user/profile", headers=consumer.headers)).status_code == 200


async def test_subscriptions_between_the_accounts_own_workspaces_do_not_count(
    app: FastAPI, client: AsyncClient
) -> None:
    """Its own team workspace enabling its personal app goes with it: no one else loses."""
    admin = await make_admin(app, client)
    builder = await register(client)
    app_id = await notes_app(client, builder, visibility="public")
    team = await new_workspace(client, builder)
    await subscribe(client, {**builder.headers, "X-Workspace-Id": team}, app_id)
    data_of(await client.delete(f"{USERS}/{builder.account_id}", headers=admin.headers))
    assert await _count(app, Workspace, Workspace.owner_id == builder.account_id) == 0
    assert await _count(app, Subscription, Subscription.app_id == app_id) == 0


async def test_a_workspace_handed_to_the_account_while_it_is_deleted_is_checked_too(
    app: FastAPI, client: AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A transfer to the account commits while its deletion runs: the deletion is refused
    (PostgreSQL: `concurrent_update`, it had listed the account's workspaces before; SQLite
    waited for the transfer and counts the workspace: `app_in_use`), instead of the cascade
    taking the workspace unchecked — the subscriber's key with it (PostgreSQL did)."""
    admin = await make_admin(app, client)
    owner, heir, consumer = await register(client), await register(client), await register(client)
    team = await new_workspace(client, owner)
    data_of(
        await client.post(
            f"/api/v1/workspaces/{team}/members",
            json={"email": heir.email, "role": "admin"},
            headers=owner.headers,
        )
    )
    in_team = replace(owner, headers={**owner.headers, "X-Workspace-Id": team})
    app_id = await notes_app(client, in_team, visibility="public")
    key_id, secret = await app_key(client, consumer, app_id)

    locked, go_on = asyncio.Event(), asyncio.Event()
    lock_account = WorkspaceService._lock_account

    async def held(self: WorkspaceService, account_id: str) -> None:
        await lock_account(self, account_id)
        locked.set()  # the transfer holds the heir's row (and the workspace's) until it commits
        await asyncio.wait_for(go_on.wait(), 10)

    monkeypatch.setattr(WorkspaceService, "_lock_account", held)
    transfer = asyncio.create_task(
        client.post(
            f"/api/v1/workspaces/{team}/transfer",
            json={"accountId": heir.account_id},
            headers=owner.headers,
        )
    )
    await asyncio.wait_for(locked.wait(), 10)
    deletion = asyncio.create_task(
        client.delete(f"{USERS}/{heir.account_id}", headers=admin.headers)
    )
    await asyncio.sleep(0.5)  # it reads the account, then waits for the transfer's locks
    assert not deletion.done(), deletion.result().text
    go_on.set()
    assert data_of(await asyncio.wait_for(transfer, 30))["ownerId"] == heir.account_id

    refused = await asyncio.wait_for(deletion, 30)
    assert refused.status_code == 409, refused.text
    assert refused.json()["data"]["error"] in ("concurrent_update", "app_in_use")
    assert await _count(app, Account, Account.id == heir.account_id) == 1
    assert await _count(app, Workspace, Workspace.id == team) == 1
    assert await _count(app, ApiKey, ApiKey.id == key_id) == 1
    data_of(await call(client, secret, app_id, "echo", {"text": "still here"}))
    retried = await client.delete(f"{USERS}/{heir.account_id}", headers=admin.headers)
    assert assert_error(retried, 409, "app_in_use")["subscribers"] == 1


# --- what the cascade misses ----------------------------------------------------------------


async def test_its_records_in_other_apps_collections_go_with_the_account(
    app: FastAPI, client: AsyncClient
) -> None:
    """Records are partitioned by the calling workspace, with no foreign key: left behind they
    were unreadable by anyone, yet held the collection's fields against type changes."""
    admin = await make_admin(app, client)
    builder = await register(client)
    leaving = await register(client)
    app_id = await notes_app(client, builder, visibility="public")
    _, secret = await app_key(client, leaving, app_id)
    data_of(await call(client, secret, app_id, "addNote", {"text": "leaving's note"}))
    assert await _count(app, Record, Record.partition == leaving.workspace_id) == 1

    data_of(await client.delete(f"{USERS}/{leaving.account_id}", headers=admin.headers))
    assert await _count(app, Record, Record.partition == leaving.workspace_id) == 0
    assert await _count(app, Record) == 0


async def test_its_collections_run_time_indexes_are_dropped(
    app: FastAPI, client: AsyncClient
) -> None:
    """As deleting an app drops them: left behind, every write to `records` keeps paying for
    indexes of collections that no longer exist."""
    admin = await make_admin(app, client)
    builder = await register(client)
    app_id = data_of(
        await client.post("/api/v1/apps", json={"name": "Shop"}, headers=builder.headers)
    )["id"]
    fields = [
        {"name": "sku", "type": "string", "unique": True},
        {"name": "price", "type": "integer", "indexed": True},
    ]
    body = {"appId": app_id, "name": "items", "fields": fields}
    dataset_id = data_of(await client.post("/api/v1/datasets", json=body, headers=builder.headers))[
        "id"
    ]
    async with app.state.engine.connect() as conn:
        assert len(await existing_indexes(conn, dataset_id)) == 2

    data_of(await client.delete(f"{USERS}/{builder.account_id}", headers=admin.headers))
    async with app.state.engine.connect() as conn:
        assert await existing_indexes(conn, dataset_id) == set()


# --- money outlives the account -------------------------------------------------------------


async def test_money_records_outlive_the_deleted_account(app: FastAPI, client: AsyncClient) -> None:
    m = await market(app, client)
    await top_up(client, m.admin, m.consumer.workspace_id, 100)
    await top_up(client, m.admin, m.builder.workspace_id, 7)
    for _ in range(3):
        data_of(await call(client, m.secret, m.app_id, "priced", {}))
    earned = data_of(await client.get("/api/v1/earnings", headers=m.builder.headers))["total"]
    assert earned > 2
    ids = [
        data_of(
            await client.post(
                "/api/v1/withdrawals", json={"amount": amount}, headers=m.builder.headers
            )
        )["id"]
        for amount in (1, 2)
    ]
    entries = await _count(app, LedgerEntry)
    wallets = await _count(app, Wallet)
    before = await ledger_invariants(app)

    url = f"{USERS}/{m.builder.account_id}?force=true"
    data_of(await client.delete(url, headers=m.admin.headers))
    # Nothing of the ledger went: entries, wallets (unowned now) and balances are as they were.
    assert await _count(app, LedgerEntry) == entries
    assert await _count(app, Wallet) == wallets
    assert await ledger_invariants(app) == before
    assert await _count(app, Wallet, Wallet.workspace_id == m.builder.workspace_id) == 0
    assert await _count(app, Withdrawal, Withdrawal.id.in_(ids)) == 2
    # A pending withdrawal of the deleted workspace can still be approved, not rejected.
    decide = f"/api/v1/admin/withdrawals/{ids[0]}"
    approved = await client.patch(decide, json={"status": "approved"}, headers=m.admin.headers)
    assert data_of(approved)["status"] == "approved"
    rejected = await client.patch(
        f"/api/v1/admin/withdrawals/{ids[1]}", json={"status": "rejected"}, headers=m.admin.headers
    )
    assert_error(rejected, 400, "withdrawal_workspace_deleted")
    await ledger_invariants(app)
    # Its sign-ins went with it; the consumer's wallets are untouched.
    assert await _count(app, LoginSession, LoginSession.account_id == m.builder.account_id) == 0
    assert (await client.get("/api/v1/wallets", headers=m.consumer.headers)).status_code == 200


# --- search and access ----------------------------------------------------------------------


async def test_search_folds_unicode_case_and_takes_hostile_strings_as_text(
    app: FastAPI, client: AsyncClient
) -> None:
    admin = await make_admin(app, client)
    await register(client, "elodie@example.com", name="Élodie Ünal")
    found = data_of(await client.get(USERS, params={"q": "éLODIE üN"}, headers=admin.headers))
    assert [u["email"] for u in found["list"]] == ["elodie@example.com"]
    for q in ("' OR 1=1 --", "%' OR '1'='1", "\\", "élodie'; DROP TABLE accounts; --"):
        listed = data_of(await client.get(USERS, params={"q": q}, headers=admin.headers))
        assert listed["list"] == []
        assert listed["totalCount"] == 0
    huge = await client.get(USERS, params={"pageSize": 10**9}, headers=admin.headers)
    assert_error(huge, 400, "invalid_input")
    far = data_of(await client.get(USERS, params={"pageNo": 1_000_000}, headers=admin.headers))
    assert far["list"] == []
    assert far["totalCount"] == 2
