"""Workspaces under review: changes of who belongs (and ownership) judged on what is committed
when they land, and deletions that serialise with a subscription to one of their apps. Each race
pauses one request at the point that matters (a wrapped service method) while another runs."""

import asyncio
from collections.abc import Callable
from typing import Any

import pytest
from fastapi import FastAPI
from httpx import AsyncClient, Response
from sqlalchemy import func, select

from apiforge.admin.service import AdminUserService
from apiforge.core.db import unit_of_work
from apiforge.keys.models import Subscription
from apiforge.keys.service import SubscriptionService
from apiforge.keys.subscribers import ensure_unused
from apiforge.workspaces import service as workspace_service
from apiforge.workspaces.models import Workspace
from apiforge.workspaces.service import WorkspaceService
from tests.e2e._apps import in_workspace, new_app
from tests.e2e._workspaces import assert_error, data_of, member_roles, team
from tests.factories import make_admin, register

WORKSPACES = "/api/v1/workspaces"


def _hold(
    monkeypatch: pytest.MonkeyPatch,
    owner: Any,
    name: str,
    *,
    after: bool,
    when: Callable[..., bool] = lambda *args: True,
) -> tuple[asyncio.Event, asyncio.Event]:
    """Make `owner.name` (a coroutine method) wait before or after it runs, for the calls `when`
    picks, until the second event is set; the first one is set once it waits."""
    reached, go_on = asyncio.Event(), asyncio.Event()
    original = getattr(owner, name)

    async def held(self: Any, *args: Any, **kwargs: Any) -> Any:
        if not when(*args):
            return await original(self, *args, **kwargs)
        result = await original(self, *args, **kwargs) if after else None
        reached.set()
        await asyncio.wait_for(go_on.wait(), 10)
        return result if after else await original(self, *args, **kwargs)

    monkeypatch.setattr(owner, name, held)
    return reached, go_on


async def _subscriptions(app: FastAPI, app_id: str) -> int:
    async with unit_of_work(app.state.sessionmaker) as session:
        stmt = select(func.count()).select_from(Subscription).where(Subscription.app_id == app_id)
        return int(await session.scalar(stmt) or 0)


async def _workspace_exists(app: FastAPI, workspace_id: str) -> bool:
    async with unit_of_work(app.state.sessionmaker) as session:
        return await session.get(Workspace, workspace_id) is not None


# --- ownership and disabled accounts -------------------------------------------------------


async def _heir_or_newcomer(
    client: AsyncClient, action: str
) -> tuple[Any, str, Any, dict[str, str]]:
    """A team, the account the action would bring in (a member to hand ownership to, or an
    outsider to add), and the team's roles, which a refusal leaves as they are."""
    if action == "transfer":
        owner, workspace_id, members = await team(client, "admin")
        heir = members["admin"]
        return owner, workspace_id, heir, {owner.account_id: "owner", heir.account_id: "admin"}
    owner, workspace_id, _ = await team(client)
    return owner, workspace_id, await register(client), {owner.account_id: "owner"}


async def _bring_in(
    client: AsyncClient, action: str, owner: Any, workspace_id: str, account: Any
) -> Response:
    if action == "transfer":
        return await client.post(
            f"{WORKSPACES}/{workspace_id}/transfer",
            json={"accountId": account.account_id},
            headers=owner.headers,
        )
    return await client.post(
        f"{WORKSPACES}/{workspace_id}/members",
        json={"email": account.email, "role": "viewer"},
        headers=owner.headers,
    )


async def _disable(client: AsyncClient, admin: Any, account: Any) -> Response:
    return await client.patch(
        f"/api/v1/admin/users/{account.account_id}",
        json={"status": "disabled"},
        headers=admin.headers,
    )


@pytest.mark.parametrize("action", ["transfer", "add"])
async def test_a_disabled_account_can_neither_own_nor_join_a_workspace(
    app: FastAPI, client: AsyncClient, action: str
) -> None:
    """409 `member_disabled`: a disabled owner could neither delete the workspace nor hand it
    back, and a disabled member can use nothing yet counts against the plan's `members`."""
    admin = await make_admin(app, client)
    owner, workspace_id, account, roles = await _heir_or_newcomer(client, action)
    data_of(await _disable(client, admin, account))
    refused = await _bring_in(client, action, owner, workspace_id, account)
    assert_error(refused, 409, "member_disabled")
    workspace = data_of(await client.get(f"{WORKSPACES}/{workspace_id}", headers=owner.headers))
    assert workspace["ownerId"] == owner.account_id
    assert await member_roles(client, owner, workspace_id) == roles


@pytest.mark.parametrize("action", ["transfer", "add"])
async def test_an_account_disabled_meanwhile_can_neither_own_nor_join_a_workspace(
    app: FastAPI, client: AsyncClient, monkeypatch: pytest.MonkeyPatch, action: str
) -> None:
    """The disabling has written the account's row, not yet committed, when the transfer or
    the addition comes: it waits for the row (PostgreSQL) or the write lock and judges the
    status it then finds, not the one read before."""
    admin = await make_admin(app, client)
    owner, workspace_id, account, roles = await _heir_or_newcomer(client, action)
    written, go_on = _hold(monkeypatch, AdminUserService, "_revoke_sessions", after=True)
    disabling = asyncio.create_task(_disable(client, admin, account))
    await asyncio.wait_for(written.wait(), 10)
    bringing = asyncio.create_task(_bring_in(client, action, owner, workspace_id, account))
    await asyncio.sleep(0.5)
    assert not bringing.done(), bringing.result().text
    go_on.set()
    assert data_of(await asyncio.wait_for(disabling, 30))["status"] == "disabled"
    assert_error(await asyncio.wait_for(bringing, 30), 409, "member_disabled")
    assert await member_roles(client, owner, workspace_id) == roles


# --- the actor's own role, changed meanwhile ----------------------------------------------


async def test_an_admin_demoted_meanwhile_cannot_change_a_role(
    client: AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    owner, workspace_id, members = await team(client, "admin", "editor")
    actor, editor = members["admin"], members["editor"]
    waiting, go_on = _hold(
        monkeypatch,
        WorkspaceService,
        "update_member",
        after=False,
        when=lambda current, *_: current.account_id == actor.account_id,
    )
    change = asyncio.create_task(
        client.patch(
            f"{WORKSPACES}/{workspace_id}/members/{editor.account_id}",
            json={"role": "viewer"},
            headers=actor.headers,
        )
    )
    await asyncio.wait_for(waiting.wait(), 10)  # its role (admin) is read
    data_of(
        await client.patch(
            f"{WORKSPACES}/{workspace_id}/members/{actor.account_id}",
            json={"role": "viewer"},
            headers=owner.headers,
        )
    )
    go_on.set()
    refused = assert_error(await asyncio.wait_for(change, 30), 403, "insufficient_role")
    assert refused["role"] == "viewer"
    roles = await member_roles(client, owner, workspace_id)
    assert roles[editor.account_id] == "editor"
    assert roles[actor.account_id] == "viewer"


async def test_an_admin_removed_meanwhile_cannot_remove_or_add_a_member(
    client: AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    owner, workspace_id, members = await team(client, "admin", "editor")
    actor, editor = members["admin"], members["editor"]
    newcomer = await register(client)

    def is_actor(current: Any, *_: Any) -> bool:
        return bool(current.account_id == actor.account_id)

    removing = _hold(monkeypatch, WorkspaceService, "remove_member", after=False, when=is_actor)
    adding = _hold(monkeypatch, WorkspaceService, "add_member", after=False, when=is_actor)
    removal = asyncio.create_task(
        client.delete(
            f"{WORKSPACES}/{workspace_id}/members/{editor.account_id}", headers=actor.headers
        )
    )
    addition = asyncio.create_task(
        client.post(
            f"{WORKSPACES}/{workspace_id}/members",
            json={"email": newcomer.email, "role": "viewer"},
            headers=actor.headers,
        )
    )
    await asyncio.wait_for(removing[0].wait(), 10)
    await asyncio.wait_for(adding[0].wait(), 10)
    data_of(
        await client.delete(
            f"{WORKSPACES}/{workspace_id}/members/{actor.account_id}", headers=owner.headers
        )
    )
    removing[1].set()
    adding[1].set()
    assert_error(await asyncio.wait_for(removal, 30), 404, "workspace_not_found")
    assert_error(await asyncio.wait_for(addition, 30), 404, "workspace_not_found")
    roles = await member_roles(client, owner, workspace_id)
    assert roles == {owner.account_id: "owner", editor.account_id: "editor"}


async def test_a_member_made_owner_meanwhile_cannot_leave(
    client: AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Leaving was judged on the role read before the transfer: the new owner's membership went,
    leaving a workspace whose owner is no member."""
    owner, workspace_id, members = await team(client, "admin")
    heir = members["admin"]
    waiting, go_on = _hold(
        monkeypatch,
        WorkspaceService,
        "remove_member",
        after=False,
        when=lambda current, *_: current.account_id == heir.account_id,
    )
    leaving = asyncio.create_task(
        client.delete(
            f"{WORKSPACES}/{workspace_id}/members/{heir.account_id}", headers=heir.headers
        )
    )
    await asyncio.wait_for(waiting.wait(), 10)
    moved = await client.post(
        f"{WORKSPACES}/{workspace_id}/transfer",
        json={"accountId": heir.account_id},
        headers=owner.headers,
    )
    assert data_of(moved)["ownerId"] == heir.account_id
    go_on.set()
    assert_error(await asyncio.wait_for(leaving, 30), 409, "owner_cannot_leave")
    roles = await member_roles(client, owner, workspace_id)
    assert roles == {owner.account_id: "admin", heir.account_id: "owner"}


# --- deletions and a subscription made at the same moment ---------------------------------


async def _shared_app(client: AsyncClient) -> tuple[Any, str, str, Any]:
    """(owner, their team workspace, its public app, a consumer who has not enabled it yet)."""
    owner, workspace_id, _ = await team(client)
    app_id = await new_app(client, in_workspace(owner, workspace_id), "Shared", visibility="public")
    return owner, workspace_id, app_id, await register(client)


@pytest.mark.parametrize("deleted", ["workspace", "owner account"])
async def test_a_subscription_written_while_its_app_is_deleted_is_counted(
    app: FastAPI, client: AsyncClient, monkeypatch: pytest.MonkeyPatch, deleted: str
) -> None:
    """The subscription is written, not yet committed, when the deletion comes (of the app's
    workspace by its owner, or of the account owning it by an administrator): the deletion waits
    for it and is refused (`app_in_use`), instead of its cascade taking the subscription."""
    admin = await make_admin(app, client) if deleted == "owner account" else None
    owner, workspace_id, app_id, consumer = await _shared_app(client)
    if admin is None:
        url, headers = f"{WORKSPACES}/{workspace_id}", owner.headers
    else:
        url, headers = f"/api/v1/admin/users/{owner.account_id}", admin.headers
    written, go_on = _hold(monkeypatch, SubscriptionService, "enable", after=True)
    subscribing = asyncio.create_task(
        client.post("/api/v1/subscriptions", json={"appId": app_id}, headers=consumer.headers)
    )
    await asyncio.wait_for(written.wait(), 10)
    deletion = asyncio.create_task(client.delete(url, headers=headers))
    await asyncio.sleep(0.5)
    assert not deletion.done(), deletion.result().text
    go_on.set()
    data_of(await asyncio.wait_for(subscribing, 30))
    refused = assert_error(await asyncio.wait_for(deletion, 30), 409, "app_in_use")
    assert refused["subscribers"] == 1
    assert await _workspace_exists(app, workspace_id)
    assert await _subscriptions(app, app_id) == 1


async def test_a_subscription_coming_after_the_deletions_check_finds_the_app_gone(
    app: FastAPI, client: AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The deletion has passed its `app_in_use` check when the subscription comes: the
    subscription waits and then finds no app (404), instead of a 200 for a subscription the
    deletion's cascade then takes."""
    owner, workspace_id, app_id, consumer = await _shared_app(client)
    checked, go_on = asyncio.Event(), asyncio.Event()

    async def held(session: Any, workspace_ids: Any) -> None:
        await ensure_unused(session, workspace_ids)
        checked.set()
        await asyncio.wait_for(go_on.wait(), 10)

    monkeypatch.setattr(workspace_service, "ensure_unused", held)
    deletion = asyncio.create_task(
        client.delete(f"{WORKSPACES}/{workspace_id}", headers=owner.headers)
    )
    await asyncio.wait_for(checked.wait(), 10)
    subscribing = asyncio.create_task(
        client.post("/api/v1/subscriptions", json={"appId": app_id}, headers=consumer.headers)
    )
    await asyncio.sleep(0.5)
    assert not subscribing.done(), subscribing.result().text
    go_on.set()
    assert data_of(await asyncio.wait_for(deletion, 30)) == {"id": workspace_id}
    assert_error(await asyncio.wait_for(subscribing, 30), 404, "app_not_found")
    assert await _subscriptions(app, app_id) == 0
