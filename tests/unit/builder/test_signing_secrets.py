"""Apps' signing secrets are sealed at rest; secrets stored in clear by earlier versions keep
working and are sealed by `apiforge db upgrade`; a secret sealed under another server key is a
clear 503, never a token signed with garbage."""

import asyncio
from pathlib import Path

import pytest
from sqlalchemy import insert, select

from apiforge.builder.models import App
from apiforge.builder.signing import PREFIX, new_signing_secret, open_signing_secret
from apiforge.core.db import make_engine
from apiforge.core.errors import UnavailableError
from apiforge.core.settings import Settings
from apiforge.migrate import upgrade
from apiforge.tools.clock import utcnow
from apiforge.tools.ids import new_id


def _settings(tmp_path: Path, key: str = "server-key-one-0123456789") -> Settings:
    return Settings(data_dir=tmp_path, secret_key=key)


def test_a_sealed_secret_opens_under_its_server_key_only(tmp_path: Path) -> None:
    stored = new_signing_secret(_settings(tmp_path))
    assert stored.startswith(PREFIX)
    assert len(stored) <= 128  # the column, sized for the clear secret
    secret = open_signing_secret(_settings(tmp_path), stored)
    assert len(secret) == 64
    assert secret not in stored
    with pytest.raises(UnavailableError) as caught:
        open_signing_secret(_settings(tmp_path, "another-server-key-987654"), stored)
    assert caught.value.reason == "signing_secret_unreadable"


def test_db_upgrade_seals_secrets_stored_in_clear(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    upgrade(settings)
    legacy = "L" * 64  # what an earlier version stored

    async def store_legacy() -> str:
        engine = make_engine(settings.resolved_database_url, pool=False)
        app_id = new_id()
        async with engine.begin() as conn:
            await conn.exec_driver_sql("PRAGMA foreign_keys=OFF")  # no workspace row needed
            await conn.execute(
                insert(App).values(
                    id=app_id,
                    workspace_id=new_id(),
                    name="Old",
                    description="",
                    visibility="private",
                    signing_secret=legacy,
                    env={},
                    created_at=utcnow(),
                    updated_at=utcnow(),
                )
            )
        await engine.dispose()
        return app_id

    async def stored(app_id: str) -> str:
        engine = make_engine(settings.resolved_database_url, pool=False)
        async with engine.connect() as conn:
            value = await conn.scalar(select(App.signing_secret).where(App.id == app_id))
        await engine.dispose()
        return str(value)

    app_id = asyncio.run(store_legacy())
    assert open_signing_secret(settings, legacy) == legacy  # works as it is until sealed
    upgrade(settings)
    sealed = asyncio.run(stored(app_id))
    assert sealed.startswith(PREFIX)
    assert open_signing_secret(settings, sealed) == legacy  # the same secret: tokens stay valid
    upgrade(settings)  # sealing twice changes nothing
    assert asyncio.run(stored(app_id)) == sealed
