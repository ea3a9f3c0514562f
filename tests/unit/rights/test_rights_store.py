"""The user-system rows on a Core connection: merged grants (also concurrent ones), partial and
full revokes, and keys that can never exist."""

import asyncio

import pytest
from fastapi import FastAPI
from httpx import AsyncClient
from sqlalchemy.ext.asyncio import AsyncEngine

from apiforge.core.errors import ValidationError
from apiforge.rights.store import RightsKey, grant_rights, held_rights, revoke_rights
from tests.e2e._apps import new_app
from tests.factories import register


async def _key(client: AsyncClient, user_id: str = "alice", target: str = "org") -> RightsKey:
    owner = await register(client)
    app_id = await new_app(client, owner.headers, "Rights")
    return RightsKey(owner.workspace_id, app_id, user_id, target)


async def _grant(engine: AsyncEngine, key: RightsKey, rights: list[str]) -> list[str]:
    async with engine.begin() as conn:
        return await grant_rights(conn, key, rights)


async def _held(engine: AsyncEngine, key: RightsKey) -> list[str] | None:
    async with engine.connect() as conn:
        return await held_rights(conn, key)


async def test_grants_merge_in_order_without_duplicates(client: AsyncClient, app: FastAPI) -> None:
    engine: AsyncEngine = app.state.engine
    key = await _key(client)
    assert await _held(engine, key) is None
    assert await _grant(engine, key, ["b", "a", "b"]) == ["b", "a"]
    assert await _grant(engine, key, ["a", "c"]) == ["b", "a", "c"]
    assert await _held(engine, key) == ["b", "a", "c"]


async def test_rows_are_per_workspace_app_user_and_target(
    client: AsyncClient, app: FastAPI
) -> None:
    engine: AsyncEngine = app.state.engine
    key = await _key(client)
    await _grant(engine, key, ["r"])
    other = await _key(client)
    variants = [
        RightsKey(other.workspace_id, key.app_id, key.user_id, key.target),
        RightsKey(key.workspace_id, other.app_id, key.user_id, key.target),
        RightsKey(key.workspace_id, key.app_id, "Alice", key.target),
        RightsKey(key.workspace_id, key.app_id, key.user_id, ""),
    ]
    for variant in variants:
        assert await _held(engine, variant) is None


async def test_revoke_some_then_all_removes_the_row(client: AsyncClient, app: FastAPI) -> None:
    engine: AsyncEngine = app.state.engine
    key = await _key(client)
    await _grant(engine, key, ["a", "b", "c"])
    async with engine.begin() as conn:
        assert await revoke_rights(conn, key, ["b", "zzz"]) == ["a", "c"]
    async with engine.begin() as conn:
        assert await revoke_rights(conn, key, ["zzz"]) == ["a", "c"]
    async with engine.begin() as conn:
        assert await revoke_rights(conn, key, None) == []
    assert await _held(engine, key) is None
    async with engine.begin() as conn:
        assert await revoke_rights(conn, key, None) is None


async def test_more_than_100_rights_are_refused_and_the_row_kept(
    client: AsyncClient, app: FastAPI
) -> None:
    engine: AsyncEngine = app.state.engine
    key = await _key(client)
    await _grant(engine, key, [f"r{i}" for i in range(99)])
    await _grant(engine, key, ["r98", "r99"])
    with pytest.raises(ValidationError) as caught:
        await _grant(engine, key, ["r100"])
    assert caught.value.reason == "too_many_rights"
    held = await _held(engine, key)
    assert held is not None
    assert len(held) == 100


async def test_keys_longer_than_the_columns_hold_nothing_and_cost_no_query(
    client: AsyncClient, app: FastAPI
) -> None:
    engine: AsyncEngine = app.state.engine
    key = await _key(client)
    long_user = RightsKey(key.workspace_id, key.app_id, "u" * 129, "")
    long_target = RightsKey(key.workspace_id, key.app_id, "u", "t" * 129)
    assert not long_user.fits
    assert not long_target.fits
    assert await _held(engine, long_user) is None
    assert await _held(engine, long_target) is None


async def test_concurrent_grants_keep_every_right(client: AsyncClient, app: FastAPI) -> None:
    engine: AsyncEngine = app.state.engine
    key = await _key(client)
    rights = [f"r{i}" for i in range(8)]
    await asyncio.gather(*(_grant(engine, key, [right]) for right in rights))
    held = await _held(engine, key)
    assert held is not None
    assert sorted(held) == sorted(rights)
