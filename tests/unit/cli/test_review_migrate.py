"""`apiforge db upgrade` started by several processes at once (every node of a cluster, or
`make run` twice, runs it as it starts) must migrate once and succeed everywhere."""

import asyncio
import os
import subprocess
import sys
from pathlib import Path

from alembic import command
from sqlalchemy import inspect

from apiforge.core.db import make_engine
from apiforge.core.settings import Settings
from apiforge.migrate import alembic_config

PROCESSES = 3
ROUNDS = 3


def _environment(settings: Settings, data_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("APIFORGE_")}
    env["APIFORGE_DATA_DIR"] = str(data_dir)
    env["APIFORGE_DATABASE_URL"] = settings.database_url
    env["APIFORGE_LOG_LEVEL"] = "WARNING"
    return env


def _upgrade_concurrently(env: dict[str, str]) -> list[tuple[int, str]]:
    command = [str(Path(sys.executable).parent / "apiforge"), "db", "upgrade"]
    started = [
        subprocess.Popen(  # noqa: S603 - our own entry point, fixed arguments
            command,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for _ in range(PROCESSES)
    ]
    results = []
    for process in started:
        output, _ = process.communicate(timeout=180)
        results.append((process.returncode, output))
    return results


async def _tables(url: str) -> set[str]:
    engine = make_engine(url, pool=False)
    try:
        async with engine.connect() as connection:
            names = await connection.run_sync(lambda c: inspect(c).get_table_names())
            return set(names)
    finally:
        await engine.dispose()


def test_concurrent_upgrades_of_a_fresh_database_all_succeed(
    settings: Settings, tmp_path: Path
) -> None:
    data_dir = tmp_path / "race"
    probe = Settings(data_dir=data_dir, database_url=settings.database_url)
    env = _environment(settings, data_dir)
    url = probe.resolved_database_url
    for _ in range(ROUNDS):
        if probe.is_sqlite:
            for path in data_dir.glob("apiforge.db*"):
                if not path.name.endswith("migrate-lock"):
                    path.unlink()
        else:
            command.downgrade(alembic_config(url), "base")
        results = _upgrade_concurrently(env)
        for returncode, output in results:
            assert returncode == 0, output[-2000:]
            assert "database is up to date" in output
    assert {"accounts", "alembic_version", "workspaces"} <= asyncio.run(_tables(url))
