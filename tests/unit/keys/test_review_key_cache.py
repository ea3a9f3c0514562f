"""`KeyLookup`: made-up keys, however many, never push real keys out of the bounded caches
(their "not found" answers are kept apart, core/cache.py `misses`)."""

from fastapi import FastAPI
from httpx import AsyncClient

from apiforge.keys.crypto import new_secret
from apiforge.keys.lookup import KeyLookup
from apiforge.tools.ids import new_id
from tests.e2e._keys import app_key, counting, notes_app
from tests.factories import register

KEYS = 3
FLOOD = 50


async def _keys(client: AsyncClient) -> list[tuple[str, str]]:
    owner = await register(client)
    app_id = await notes_app(client, owner, publish=False)
    return [await app_key(client, owner, app_id) for _ in range(KEYS)]


async def test_a_flood_of_made_up_keys_leaves_real_keys_cached(
    app: FastAPI, client: AsyncClient
) -> None:
    keys = await _keys(client)
    lookup = KeyLookup(app.state.settings, app.state.engine, ttl=60, max_entries=KEYS)
    async with app.state.engine.connect() as conn:
        for _key_id, secret in keys:
            assert await lookup.key(conn, secret) is not None
        for _ in range(FLOOD):
            assert await lookup.key(conn, new_secret("app")) is None
        with counting(app, "api_keys") as seen:
            for _key_id, secret in keys:
                assert await lookup.key(conn, secret) is not None
        assert seen == []  # no database read: every real key is still cached
    await lookup.close()


async def test_a_flood_of_unknown_key_ids_leaves_signing_keys_cached(
    app: FastAPI, client: AsyncClient
) -> None:
    keys = await _keys(client)
    lookup = KeyLookup(app.state.settings, app.state.engine, ttl=60, max_entries=KEYS)
    async with app.state.engine.connect() as conn:
        for key_id, _secret in keys:
            assert await lookup.signing_key_for(conn, key_id) is not None
        for _ in range(FLOOD):
            assert await lookup.signing_key_for(conn, new_id()) is None
        with counting(app, "api_keys") as seen:
            for key_id, _secret in keys:
                assert await lookup.signing_key_for(conn, key_id) is not None
        assert seen == []
    await lookup.close()


async def test_misses_are_bounded_and_still_cached(app: FastAPI) -> None:
    lookup = KeyLookup(app.state.settings, app.state.engine, ttl=60, max_misses=2)
    unknown = [new_secret("app") for _ in range(3)]
    async with app.state.engine.connect() as conn:
        for secret in unknown:
            assert await lookup.key(conn, secret) is None
        with counting(app, "api_keys") as seen:
            assert await lookup.key(conn, unknown[-1]) is None  # cached
        assert seen == []
        with counting(app, "api_keys") as seen:
            assert await lookup.key(conn, unknown[0]) is None  # the oldest miss went
        assert len(seen) == 1
    await lookup.close()
