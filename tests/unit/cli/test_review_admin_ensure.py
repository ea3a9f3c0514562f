"""`apiforge admin ensure` run by several nodes starting at once (`make run` on each): one creates
the administrator, the others find it; none fails."""

import asyncio
import os
import subprocess
import sys
from pathlib import Path

from sqlalchemy import select

from apiforge.accounts.models import Account
from apiforge.cli import DEFAULT_ADMIN_EMAIL
from apiforge.core.db import make_engine
from apiforge.core.settings import Settings

PROCESSES = 4


async def _accounts(url: str) -> list[tuple[str, bool]]:
    engine = make_engine(url, pool=False)
    try:
        async with engine.connect() as connection:
            rows = await connection.execute(select(Account.email, Account.is_admin))
            return [(row.email, row.is_admin) for row in rows]
    finally:
        await engine.dispose()


def test_concurrent_admin_ensure_creates_one_admin_and_all_succeed(settings: Settings) -> None:
    assert asyncio.run(_accounts(settings.resolved_database_url)) == []
    env = {k: v for k, v in os.environ.items() if not k.startswith("APIFORGE_")}
    env.update(
        APIFORGE_DATA_DIR=str(settings.data_dir),
        APIFORGE_DATABASE_URL=settings.database_url,
        APIFORGE_SECRET_KEY=settings.secret_key or "",
        APIFORGE_LOG_LEVEL="WARNING",
    )
    command = [str(Path(sys.executable).parent / "apiforge"), "admin", "ensure"]
    started = [
        subprocess.Popen(  # noqa: S603 - our own entry point, fixed arguments
            command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        for _ in range(PROCESSES)
    ]
    outputs = []
    for process in started:
        output, _ = process.communicate(timeout=120)
        outputs.append((process.returncode, output))
    for returncode, output in outputs:
        assert returncode == 0, output
    created = [o for _, o in outputs if o.startswith("created the first administrator")]
    assert len(created) == 1, outputs
    assert asyncio.run(_accounts(settings.resolved_database_url)) == [(DEFAULT_ADMIN_EMAIL, True)]
