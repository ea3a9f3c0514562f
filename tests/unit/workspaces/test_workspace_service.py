"""WorkspaceService against a real database: resolving the current workspace, deletes, transfer."""

from collections.abc import AsyncIterator

import pytest
from fastapi import FastAPI
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from apiforge.accounts.models import Account
from apiforge.core.errors import ConflictError
from apiforge.workspaces.models import Membership, Role, Workspace
from apiforge.workspaces.schemas import OwnershipTransfer
from apiforge.workspaces.service import (
    WorkspaceNotFoundError,
    WorkspaceService,
    create_workspace,
    personal_workspace_id,
)


@pytest.fixture
async def session(app: FastAPI) -> AsyncIterator[AsyncSession]:
    async with app.state.sessionmaker() as db:
        yield db
        await db.rollback()


async def _account(session: AsyncSession, email: str) -> Account:
    account = Account(email=email, password_hash="not-a-real-hash")
    session.add(account)
    await session.flush()
    await create_workspace(session, account.id, f"{email}'s", personal=True)
    return account


async def test_resolve_defaults_to_the_personal_workspace(session: AsyncSession) -> None:
    ada = await _account(session, "ada@example.com")
    current = await WorkspaceService(session).resolve(ada.id, None)
    assert current.id == await personal_workspace_id(session, ada.id)
    assert current.workspace.personal
    assert current.role is Role.OWNER
    assert current.account_id == ada.id


async def test_resolve_gives_the_member_role_of_a_chosen_workspace(session: AsyncSession) -> None:
    ada = await _account(session, "ada@example.com")
    bob = await _account(session, "bob@example.com")
    team = await create_workspace(session, ada.id, "Team")
    session.add(Membership(workspace_id=team.id, account_id=bob.id, role="editor"))
    await session.flush()
    current = await WorkspaceService(session).resolve(bob.id, team.id)
    assert (current.id, current.role) == (team.id, Role.EDITOR)


@pytest.mark.parametrize("kind", ["other", "unknown", "malformed", "empty"])
async def test_resolve_refuses_anything_but_own_memberships(
    session: AsyncSession, kind: str
) -> None:
    ada = await _account(session, "ada@example.com")
    bob = await _account(session, "bob@example.com")
    other = await personal_workspace_id(session, ada.id)
    workspace_id = {
        "other": other,
        "unknown": "01h00000000000000000000000",
        "malformed": "' OR 1=1 --",
        "empty": "",
    }[kind]
    with pytest.raises(WorkspaceNotFoundError) as caught:
        await WorkspaceService(session).resolve(bob.id, workspace_id)
    assert (caught.value.status, caught.value.reason) == (404, "workspace_not_found")


async def test_delete_cascades_memberships(session: AsyncSession) -> None:
    ada = await _account(session, "ada@example.com")
    bob = await _account(session, "bob@example.com")
    team = await create_workspace(session, ada.id, "Team")
    session.add(Membership(workspace_id=team.id, account_id=bob.id, role="viewer"))
    await session.flush()
    service = WorkspaceService(session)
    await service.delete(await service.resolve(ada.id, team.id))
    assert await session.get(Workspace, team.id) is None
    left = await session.scalar(select(func.count()).where(Membership.workspace_id == team.id))
    assert left == 0


async def test_personal_workspace_survives_delete(session: AsyncSession) -> None:
    ada = await _account(session, "ada@example.com")
    service = WorkspaceService(session)
    with pytest.raises(ConflictError) as caught:
        await service.delete(await service.resolve(ada.id, None))
    assert caught.value.reason == "personal_workspace"


async def test_transfer_moves_owner_and_keeps_old_owner_as_admin(session: AsyncSession) -> None:
    ada = await _account(session, "ada@example.com")
    bob = await _account(session, "bob@example.com")
    ada_personal = await personal_workspace_id(session, ada.id)
    bob_personal = await personal_workspace_id(session, bob.id)
    team = await create_workspace(session, ada.id, "Team")
    session.add(Membership(workspace_id=team.id, account_id=bob.id, role="viewer"))
    await session.flush()
    service = WorkspaceService(session)
    read = await service.transfer(
        await service.resolve(ada.id, team.id), OwnershipTransfer(account_id=bob.id)
    )
    assert (read.owner_id, read.role) == (bob.id, Role.ADMIN)
    rows = await session.execute(
        select(Membership.account_id, Membership.role).where(Membership.workspace_id == team.id)
    )
    roles = dict(rows.all())
    assert roles[ada.id] == "admin"
    assert roles[bob.id] == "owner"
    # A team workspace changing hands never becomes anyone's personal one.
    assert await personal_workspace_id(session, bob.id) == bob_personal
    assert await personal_workspace_id(session, ada.id) == ada_personal
