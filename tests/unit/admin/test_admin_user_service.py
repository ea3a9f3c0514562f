"""AdminUserService rules that HTTP alone cannot reach: the last active administrator stays."""

import asyncio

import pytest
from fastapi import FastAPI
from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession

from apiforge.accounts.models import Account
from apiforge.admin.schemas import AccountStatus
from apiforge.admin.service import AdminUserService
from apiforge.core.db import unit_of_work
from apiforge.core.errors import ConflictError
from apiforge.tools.ids import new_id


def _account(*, is_admin: bool, status: str = "active") -> Account:
    return Account(
        id=new_id(),
        email=f"{new_id()}@example.com",
        password_hash="not-a-real-hash",
        is_admin=is_admin,
        status=status,
    )


async def _seed(app: FastAPI, *accounts: Account) -> None:
    async with unit_of_work(app.state.sessionmaker) as session:
        session.add_all(accounts)


async def _status(app: FastAPI, account_id: str) -> str | None:
    async with unit_of_work(app.state.sessionmaker) as session:
        account = await session.get(Account, account_id)
        return None if account is None else account.status


async def _run_refused(app: FastAPI, action: str, actor: Account, target: Account) -> str:
    with pytest.raises(ConflictError) as caught:
        async with unit_of_work(app.state.sessionmaker) as session:
            await _act(session, action, actor, target)
    return caught.value.reason


async def _act(session: AsyncSession, action: str, actor: Account, target: Account) -> None:
    service = AdminUserService(session)
    if action == "disable":
        await service.set_status(actor, target.id, AccountStatus.DISABLED)
    else:
        await service.delete_user(actor, target.id)


@pytest.mark.parametrize("action", ["disable", "delete"])
async def test_the_last_active_admin_cannot_be_removed(app: FastAPI, action: str) -> None:
    # The HTTP guard always has an active admin as the actor, so this state is reached only by
    # a race (two admins disabling each other); the service must still refuse.
    only_admin = _account(is_admin=True)
    former_admin = _account(is_admin=True, status="disabled")
    actor = _account(is_admin=False)
    await _seed(app, only_admin, former_admin, actor)
    assert await _run_refused(app, action, actor, only_admin) == "last_admin"
    assert await _status(app, only_admin.id) == "active"


@pytest.mark.parametrize("action", ["disable", "delete"])
async def test_an_admin_with_another_active_admin_left_can_be_removed(
    app: FastAPI, action: str
) -> None:
    first, second = _account(is_admin=True), _account(is_admin=True)
    await _seed(app, first, second)
    async with unit_of_work(app.state.sessionmaker) as session:
        await _act(session, action, first, second)
    assert await _status(app, second.id) == ("disabled" if action == "disable" else None)
    assert await _run_refused(app, action, second, first) == "last_admin"


async def test_ordinary_accounts_are_not_subject_to_the_admin_count(app: FastAPI) -> None:
    actor, user = _account(is_admin=False), _account(is_admin=False)
    await _seed(app, actor, user)  # no administrator exists at all
    async with unit_of_work(app.state.sessionmaker) as session:
        await AdminUserService(session).set_status(actor, user.id, AccountStatus.DISABLED)
    assert await _status(app, user.id) == "disabled"


async def test_self_is_refused_before_anything_else(app: FastAPI) -> None:
    admin, other = _account(is_admin=True), _account(is_admin=True)
    await _seed(app, admin, other)
    assert await _run_refused(app, "disable", admin, admin) == "cannot_modify_self"
    assert await _run_refused(app, "delete", admin, admin) == "cannot_modify_self"
    assert await _status(app, admin.id) == "active"


async def test_two_admins_disabling_each_other_at_once_leave_one_active(app: FastAPI) -> None:
    first, second = _account(is_admin=True), _account(is_admin=True)
    await _seed(app, first, second)

    async def attempt(actor: Account, target: Account) -> str:
        try:
            async with unit_of_work(app.state.sessionmaker) as session:
                await AdminUserService(session).set_status(actor, target.id, AccountStatus.DISABLED)
        except ConflictError as exc:
            return exc.reason
        return "done"

    for _ in range(5):
        outcomes = await asyncio.gather(attempt(first, second), attempt(second, first))
        assert sorted(outcomes) == ["done", "last_admin"]
        statuses = {await _status(app, first.id), await _status(app, second.id)}
        assert statuses == {"active", "disabled"}
        async with unit_of_work(app.state.sessionmaker) as session:
            await session.execute(update(Account).values(status="active"))
