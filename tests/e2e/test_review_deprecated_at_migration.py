"""Migration 0019 dates the deprecations made before it (`Deprecation: @<seconds>`, RFC 9745):
a version already deprecated gets its publish time, the one moment known to be no later; the
others none. On both backends."""

import asyncio

from alembic import command
from fastapi import FastAPI
from httpx import AsyncClient
from sqlalchemy import select

from apiforge.builder.models import AppVersion
from apiforge.core.db import make_engine
from apiforge.core.settings import Settings
from apiforge.migrate import alembic_config
from tests.e2e._keys import notes_app
from tests.e2e._workspaces import data_of
from tests.factories import register


async def test_versions_deprecated_before_the_migration_are_dated_by_their_publish(
    app: FastAPI, client: AsyncClient, settings: Settings
) -> None:
    owner = await register(client)
    app_id = await notes_app(client, owner)  # 1.0.0
    url = f"/api/v1/apps/{app_id}/versions"
    data_of(await client.post(url, json={"bump": "patch"}, headers=owner.headers))  # 1.0.1
    data_of(await client.patch(f"{url}/1.0.0", json={"deprecated": 1}, headers=owner.headers))
    await app.state.engine.dispose()

    config = alembic_config(settings.resolved_database_url)
    await asyncio.to_thread(command.downgrade, config, "0018")
    await asyncio.to_thread(command.upgrade, config, "head")

    engine = make_engine(settings.resolved_database_url, pool=False)
    try:
        async with engine.connect() as connection:
            rows = await connection.execute(
                select(AppVersion.version, AppVersion.created_at, AppVersion.deprecated_at)
                .where(AppVersion.app_id == app_id)
                .order_by(AppVersion.version)
            )
            dated = {row.version: (row.created_at, row.deprecated_at) for row in rows}
    finally:
        await engine.dispose()
    assert dated["1.0.0"][1] == dated["1.0.0"][0]
    assert dated["1.0.1"][1] is None
