"""Pruning `jwtRevoke`'s rows (`engine/revocations.prune_revocations`, run hourly by every
server process): a row goes only once every token it refuses has expired on every node — never
while a revoked token could still be valid, nor when it was revoked again meanwhile — and the
app's latest revocation, read with its signing secrets, follows. The server prunes whether or
not it expires its call logs."""

import asyncio
from datetime import datetime, timedelta
from typing import Any

import jwt
from fastapi import FastAPI
from httpx import AsyncClient
from sqlalchemy import insert, select

from apiforge.builder.models import EndUserTokenRevocation
from apiforge.builder.signing import read_signing_secrets
from apiforge.engine.revocations import PRUNE_AFTER, RevocationKey, prune_revocations, revoke_tokens
from apiforge.engine.tokens import MAX_EXPIRES_IN, ceil_ms, from_ms
from apiforge.tools.clock import CLOCK_SKEW_SECONDS, utcnow
from apiforge.usage.retention import LogRetention
from tests.e2e._apps import new_api, new_app
from tests.e2e._keys import PRICE
from tests.e2e._perms import Consumer, consumer
from tests.e2e._workspaces import assert_error, data_of
from tests.factories import User, register

USER = [
    {"name": "user", "type": "string", "required": True, "max": 128},
    {"name": "ttl", "type": "integer", "required": False, "default": 600},
]
TOKEN = {"requireToken": True, "mode": "none", "rights": []}
OPEN = {"requireToken": False, "mode": "none", "rights": []}
SIGN = {
    "id": "session",
    "type": "jwtSign",
    "sub": {"expr": "args.user"},
    "expiresIn": {"expr": "args.ttl"},
}
APIS: dict[str, tuple[list[Any], list[Any], dict[str, Any]]] = {
    "signIn": (USER, [SIGN], OPEN),
    "signOut": ([], [{"id": "out", "type": "jwtRevoke", "sub": {"expr": "token.sub"}}], TOKEN),
    "me": ([], [{"id": "me", "type": "set", "value": {"expr": "token.sub"}}], TOKEN),
}
PAST_THE_MILLISECOND = 0.002  # as in test_token_revocation.py: sign in after a revocation


async def _app(client: AsyncClient, owner: User, name: str = "Prune") -> str:
    app_id = await new_app(client, owner.headers, name, visibility="public")
    for api, (params, steps, auth) in APIS.items():
        await new_api(
            client, owner.headers, app_id, api, params=params, steps=steps, auth=auth, price=PRICE
        )
    data_of(
        await client.post(
            f"/api/v1/apps/{app_id}/versions", json={"bump": "minor"}, headers=owner.headers
        )
    )
    return app_id


async def _sign_out(who: Consumer, token: str) -> None:
    data_of(await who.call("signOut", token))
    await asyncio.sleep(PAST_THE_MILLISECOND)


async def _revoked_at(app: FastAPI, who: Consumer, sub: str, at: datetime) -> None:
    """A revocation stored as `jwtRevoke` stores it, at a chosen time."""
    row = {"app_id": who.app_id, "workspace_id": who.user.workspace_id, "sub": sub}
    async with app.state.engine.begin() as conn:
        await conn.execute(insert(EndUserTokenRevocation), [{**row, "revoked_at": at}])


async def _rows(app: FastAPI, app_id: str) -> dict[str, datetime]:
    table = EndUserTokenRevocation
    async with app.state.engine.connect() as conn:
        rows = await conn.execute(select(table.sub, table.revoked_at).where(table.app_id == app_id))
        return {row.sub: row.revoked_at for row in rows}


async def _latest_ms(app: FastAPI, app_id: str) -> int | None:
    async with app.state.engine.connect() as conn:
        secrets = await read_signing_secrets(app.state.settings, conn, app_id)
    assert secrets is not None
    return secrets.revoked_ms


async def test_rows_older_than_any_token_they_refuse_go_and_the_others_stay(
    app: FastAPI, client: AsyncClient
) -> None:
    owner = await register(client)
    app_id, other_app = await _app(client, owner), await _app(client, owner, "Other")
    a, c = await consumer(client, app_id), await consumer(client, other_app)
    alice = await a.sign_in("alice")
    await _sign_out(a, alice)
    now = utcnow()
    await _revoked_at(app, a, "bob", now - PRUNE_AFTER - timedelta(seconds=1))
    # Over a year old, yet a token it refuses may still be valid on a node a minute behind.
    await _revoked_at(app, a, "carol", now - PRUNE_AFTER + timedelta(seconds=1))
    await _revoked_at(app, c, "bob", now - PRUNE_AFTER - timedelta(days=30))
    await _revoked_at(app, c, "dave", now - timedelta(days=1))

    assert await prune_revocations(app.state.engine, now) == 2

    assert set(await _rows(app, app_id)) == {"alice", "carol"}
    assert set(await _rows(app, other_app)) == {"dave"}
    assert_error(await a.call("me", alice), 401, "token_revoked")
    assert await prune_revocations(app.state.engine, now) == 0  # nothing left to do


async def test_a_row_stays_while_a_token_it_refuses_could_still_be_valid(
    app: FastAPI, client: AsyncClient
) -> None:
    """The longest-lived token (a year) signed right before its user's revocation: the row is
    kept until that token has expired even on a node `CLOCK_SKEW_SECONDS` behind."""
    owner = await register(client)
    app_id = await _app(client, owner)
    a = await consumer(client, app_id)
    token = data_of(await a.call("signIn", user="alice", ttl=MAX_EXPIRES_IN))["session"]["token"]
    await _sign_out(a, token)
    (revoked,) = (await _rows(app, app_id)).values()

    assert await prune_revocations(app.state.engine, revoked + PRUNE_AFTER) == 0
    assert_error(await a.call("me", token), 401, "token_revoked")
    gone = revoked + PRUNE_AFTER + timedelta(milliseconds=1)
    assert await prune_revocations(app.state.engine, gone) == 1
    assert await _rows(app, app_id) == {}
    exp = jwt.decode(token, options={"verify_signature": False})["exp"]
    assert exp <= (gone - timedelta(seconds=CLOCK_SKEW_SECONDS)).timestamp()  # expired there


async def test_the_apps_latest_revocation_follows_a_prune(
    app: FastAPI, client: AsyncClient
) -> None:
    """`SigningSecrets.revoked_ms` is the latest of the rows left: a pruned row refused only
    expired tokens, so tokens issued after the rows left need no look-up again."""
    owner = await register(client)
    app_id = await _app(client, owner)
    a = await consumer(client, app_id)
    now = utcnow()
    kept, old = now - timedelta(days=3), now - PRUNE_AFTER - timedelta(hours=1)
    await _revoked_at(app, a, "alice", kept)
    await _revoked_at(app, a, "bob", old)
    assert await _latest_ms(app, app_id) == ceil_ms(kept)

    assert await prune_revocations(app.state.engine, now) == 1
    assert await _latest_ms(app, app_id) == ceil_ms(kept)
    assert await prune_revocations(app.state.engine, kept + PRUNE_AFTER * 2) == 1
    assert await _latest_ms(app, app_id) is None  # as an app that never revoked
    fresh = await a.sign_in("alice")
    assert data_of(await a.call("me", fresh)) == {"me": "alice"}


async def test_a_revocation_renewed_while_the_prune_runs_is_kept(
    app: FastAPI, client: AsyncClient
) -> None:
    """The prune deletes a row only if it is still old when deleted: a `jwtRevoke` of the same
    user, committed while the prune waits for it, keeps its row (PostgreSQL re-checks the row's
    new version; a list of keys read before would still have matched)."""
    owner = await register(client)
    app_id = await _app(client, owner)
    a = await consumer(client, app_id)
    now = utcnow()
    await _revoked_at(app, a, "alice", now - PRUNE_AFTER - timedelta(days=1))
    key = RevocationKey(app_id, a.user.workspace_id, "alice")
    engine = app.state.engine
    async with engine.connect() as conn:
        transaction = await conn.begin()
        await revoke_tokens(conn, key, from_ms(ceil_ms(now)))  # holds the row, uncommitted
        pruning = asyncio.create_task(prune_revocations(engine, now))
        await asyncio.sleep(0.3)
        assert not pruning.done()  # it waits for the revocation's transaction
        await transaction.commit()
    assert await pruning == 0
    assert await _rows(app, app_id) == {"alice": from_ms(ceil_ms(now))}


async def test_the_server_prunes_with_the_call_logs_kept(app: FastAPI, client: AsyncClient) -> None:
    """The retention task prunes revocations with `APIFORGE_LOG_RETENTION_DAYS` at 0 too."""
    owner = await register(client)
    app_id = await _app(client, owner)
    a = await consumer(client, app_id)
    await _revoked_at(app, a, "alice", utcnow() - PRUNE_AFTER - timedelta(minutes=1))
    await _revoked_at(app, a, "bob", utcnow() - timedelta(minutes=1))
    task = LogRetention(app.state.engine, 0, interval=0.01)
    task.start()
    try:
        for _ in range(500):
            if set(await _rows(app, app_id)) == {"bob"}:
                break
            await asyncio.sleep(0.01)
        assert set(await _rows(app, app_id)) == {"bob"}
    finally:
        await task.stop()
