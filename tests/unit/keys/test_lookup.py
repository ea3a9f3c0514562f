"""`KeyLookup`: one-second caches of keys and subscriptions, and what they cost in queries."""

import asyncio

from fastapi import FastAPI
from httpx import AsyncClient
from sqlalchemy import update

from apiforge.core.settings import Settings
from apiforge.keys.crypto import new_secret, secret_hash
from apiforge.keys.lookup import KeyLookup
from apiforge.keys.models import ApiKey, Subscription
from tests.e2e._keys import app_key, counting, create_key, notes_app
from tests.factories import User, register


async def _keyed_app(client: AsyncClient) -> tuple[User, str, str, str]:
    owner = await register(client)
    app_id = await notes_app(client, owner, publish=False)
    key_id, secret = await app_key(client, owner, app_id)
    return owner, app_id, key_id, secret


async def test_a_key_costs_one_query_per_ttl(app: FastAPI, client: AsyncClient) -> None:
    owner, app_id, key_id, secret = await _keyed_app(client)
    lookup = KeyLookup(app.state.settings, app.state.engine, ttl=0.2)
    async with app.state.engine.connect() as conn:
        with counting(app, "api_keys") as seen:
            first = await lookup.key(conn, secret)
            for _ in range(20):
                assert await lookup.key(conn, secret) == first
        assert len(seen) == 1
        assert first is not None
        assert (first.id, first.kind, first.app_id, first.workspace_id, first.role) == (
            key_id,
            "app",
            app_id,
            owner.workspace_id,
            None,
        )
        await asyncio.sleep(0.25)
        with counting(app, "api_keys") as seen:
            assert await lookup.key(conn, secret) == first
        assert len(seen) == 1
    await lookup.close()


async def test_garbage_costs_no_query_and_unknown_keys_are_cached(app: FastAPI) -> None:
    lookup = KeyLookup(app.state.settings, app.state.engine)
    async with app.state.engine.connect() as conn:
        with counting(app, "api_keys") as seen:
            for garbage in ("", "app-short", "Bearer x", "'; DROP TABLE api_keys; --"):
                assert await lookup.key(conn, garbage) is None
            assert await lookup.signing_key_for(conn, "not-an-id") is None
        assert seen == []
        unknown = new_secret("app")
        with counting(app, "api_keys") as seen:
            assert await lookup.key(conn, unknown) is None
            assert await lookup.key(conn, unknown) is None
        assert len(seen) == 1
    await lookup.close()


async def test_ids_not_shaped_like_an_id_take_no_cache_entry(
    app: FastAPI, client: AsyncClient
) -> None:
    """Anonymous junk in `X-App-Id` must not push real keys out of the bounded cache."""
    _owner, _app_id, key_id, _secret = await _keyed_app(client)
    lookup = KeyLookup(app.state.settings, app.state.engine, ttl=60, max_entries=2)
    async with app.state.engine.connect() as conn:
        assert await lookup.signing_key_for(conn, key_id) is not None
        for junk in ("not-an-id", "x" * 128, key_id.upper(), key_id + "0", "'; DROP --"):
            assert await lookup.signing_key_for(conn, junk) is None
        with counting(app, "api_keys") as seen:
            assert await lookup.signing_key_for(conn, key_id) is not None
        assert seen == []  # still cached: no junk took its place
    await lookup.close()


async def test_a_change_is_seen_within_the_ttl_and_at_once_when_forgotten(
    app: FastAPI, client: AsyncClient
) -> None:
    _owner, _app_id, key_id, secret = await _keyed_app(client)
    lookup = KeyLookup(app.state.settings, app.state.engine, ttl=0.3)
    revoke = update(ApiKey).where(ApiKey.id == key_id).values(revoked_at=ApiKey.created_at)
    async with app.state.engine.connect() as conn:
        before = await lookup.key(conn, secret)
        assert before is not None
        assert not before.revoked
        async with app.state.engine.begin() as other:  # another node revokes
            await other.execute(revoke)
        await conn.rollback()  # every call reads a fresh snapshot
        assert await lookup.key(conn, secret) == before  # still cached ...
        await asyncio.sleep(0.35)
        after = await lookup.key(conn, secret)
        assert after is not None
        assert after.revoked
        async with app.state.engine.begin() as other:
            await other.execute(update(ApiKey).where(ApiKey.id == key_id).values(revoked_at=None))
        await conn.rollback()
        lookup.forget_key(key_id, secret_hash(secret))  # a change made by this process
        again = await lookup.key(conn, secret)
        assert again is not None
        assert not again.revoked
    await lookup.close()


async def test_signing_keys_open_the_sealed_secret(app: FastAPI, client: AsyncClient) -> None:
    _owner, _app_id, key_id, secret = await _keyed_app(client)
    lookup = KeyLookup(app.state.settings, app.state.engine)
    async with app.state.engine.connect() as conn:
        found = await lookup.signing_key_for(conn, key_id)
        assert found is not None
        record, opened = found
        assert (record.id, opened) == (key_id, secret)
        # Sealed under a previous server secret: unusable, never a wrong secret.
        rotated = KeyLookup(
            Settings(data_dir=app.state.settings.data_dir, secret_key="another-" + "y" * 40),
            app.state.engine,
        )
        unreadable = await rotated.signing_key_for(conn, key_id)
        assert unreadable is not None
        assert (unreadable[0].id, unreadable[1]) == (key_id, None)
        await rotated.close()
    await lookup.close()


async def test_subscription_answers_are_cached_and_forgettable(
    app: FastAPI, client: AsyncClient
) -> None:
    owner, app_id, _key_id, _secret = await _keyed_app(client)
    lookup = KeyLookup(app.state.settings, app.state.engine, ttl=60)
    async with app.state.engine.connect() as conn:
        with counting(app, "subscriptions") as seen:
            assert await lookup.subscription_enabled(conn, owner.workspace_id, app_id)
            assert await lookup.subscription_enabled(conn, owner.workspace_id, app_id)
        assert len(seen) == 1
        async with app.state.engine.begin() as other:
            await other.execute(update(Subscription).values(enabled=False))
        await conn.rollback()
        assert await lookup.subscription_enabled(conn, owner.workspace_id, app_id)
        lookup.forget_subscription(owner.workspace_id, app_id)
        assert not await lookup.subscription_enabled(conn, owner.workspace_id, app_id)
    await lookup.close()


async def test_a_workspace_key_role_follows_its_creator(app: FastAPI, client: AsyncClient) -> None:
    owner = await register(client)
    key_id, secret = await create_key(client, owner.headers, type="ws", role="admin")
    lookup = KeyLookup(app.state.settings, app.state.engine)
    async with app.state.engine.connect() as conn:
        record = await lookup.key(conn, secret)
    assert record is not None
    assert (record.id, record.kind, record.role, record.account_id) == (
        key_id,
        "ws",
        "admin",
        owner.account_id,
    )
    await lookup.close()
