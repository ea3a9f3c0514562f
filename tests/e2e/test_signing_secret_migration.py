"""Migration 0021 (the previous signing secret) over apps that exist: down to 0020 and up again,
each app keeps its current secret and loses any previous one (a grace ends with a downgrade, as
the older release knows one secret), on both backends."""

import asyncio

from alembic import command
from fastapi import FastAPI
from httpx import AsyncClient
from sqlalchemy import inspect, select

from apiforge.builder.models import App
from apiforge.core.db import make_engine
from apiforge.core.settings import Settings
from apiforge.migrate import alembic_config
from tests.e2e._apps import new_app
from tests.e2e._workspaces import data_of
from tests.factories import register

COLUMNS = {"previous_signing_secret", "previous_signing_secret_until"}


async def test_apps_keep_their_secret_down_and_up_again(
    app: FastAPI, client: AsyncClient, settings: Settings
) -> None:
    owner = await register(client)
    rotated = await new_app(client, owner.headers, "Rotated")
    plain = await new_app(client, owner.headers, "Plain")
    url = f"/api/v1/apps/{rotated}/signing-secret/rotate"
    data_of(await client.post(url, json={"graceSeconds": 600}, headers=owner.headers))
    async with app.state.engine.connect() as conn:
        rows = await conn.execute(select(App.id, App.signing_secret))
        before = {row.id: row.signing_secret for row in rows}
    await app.state.engine.dispose()

    config = alembic_config(settings.resolved_database_url)
    await asyncio.to_thread(command.downgrade, config, "0020")
    engine = make_engine(settings.resolved_database_url, pool=False)
    try:
        async with engine.connect() as conn:
            columns = await conn.run_sync(
                lambda sync: {c["name"] for c in inspect(sync).get_columns("apps")}
            )
        assert not COLUMNS & columns
        await asyncio.to_thread(command.upgrade, config, "head")
        async with engine.connect() as conn:
            rows = await conn.execute(
                select(
                    App.id,
                    App.signing_secret,
                    App.previous_signing_secret,
                    App.previous_signing_secret_until,
                )
            )
            after = {row.id: tuple(row[1:]) for row in rows}
    finally:
        await engine.dispose()
    assert set(after) == set(before) >= {rotated, plain}
    assert after == {app_id: (secret, None, None) for app_id, secret in before.items()}
