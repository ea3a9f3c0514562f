"""`apiforge apps export --out` to a path it cannot write: a message and exit 1, no traceback."""

import asyncio
from pathlib import Path

from httpx import ASGITransport, AsyncClient
from typer.testing import CliRunner

from apiforge.app import create_app, shutdown
from apiforge.builder.cli import apps as apps_cli
from apiforge.core.settings import Settings
from tests.factories import register

runner = CliRunner()


async def _workspace(settings: Settings) -> str:
    application = create_app(settings)
    try:
        transport = ASGITransport(app=application, raise_app_exceptions=False)
        async with AsyncClient(transport=transport, base_url="http://testserver") as http:
            return (await register(http)).workspace_id
    finally:
        await shutdown(application)


def _env(settings: Settings) -> dict[str, str | None]:
    """The command's environment: the test's database, no Redis."""
    return {
        "APIFORGE_DATA_DIR": str(settings.data_dir),
        "APIFORGE_DATABASE_URL": settings.database_url,
        "APIFORGE_SECRET_KEY": settings.secret_key,
        "APIFORGE_REDIS_URL": None,
    }


def test_export_to_an_unwritable_path_is_a_clear_error(settings: Settings, tmp_path: Path) -> None:
    env = _env(settings)
    document = tmp_path / "app.json"
    document.write_text('{"app": {"name": "Exported"}}')
    workspace_id = asyncio.run(_workspace(settings))
    imported = runner.invoke(
        apps_cli, ["import", str(document), "--workspace", workspace_id], env=env
    )
    assert imported.exit_code == 0, imported.output
    app_id = imported.stdout.strip().rsplit(" ", 1)[-1]

    for target in (tmp_path / "missing" / "app.json", tmp_path):  # no such folder; a folder
        result = runner.invoke(apps_cli, ["export", app_id, "--out", str(target)], env=env)
        assert result.exit_code == 1, result.output
        assert isinstance(result.exception, SystemExit)  # not a traceback
        assert f"error: cannot write {target}" in result.output
    assert not (tmp_path / "missing").exists()


def test_import_keeps_to_the_workspace_apps_quota(settings: Settings, tmp_path: Path) -> None:
    """The command acts as the operator, but the workspace's plan still bounds its apps."""
    env = _env(settings)
    document = tmp_path / "app.json"
    document.write_text('{"app": {"name": "Exported"}}')
    workspace_id = asyncio.run(_workspace(settings))
    for _ in range(10):  # the free plan's `apps` quota
        done = runner.invoke(
            apps_cli, ["import", str(document), "--workspace", workspace_id], env=env
        )
        assert done.exit_code == 0, done.output
    refused = runner.invoke(
        apps_cli, ["import", str(document), "--workspace", workspace_id], env=env
    )
    assert refused.exit_code == 1, refused.output
    assert isinstance(refused.exception, SystemExit)
    assert "apps quota of 10 is reached" in refused.output
