"""`apiforge apps export|import` on paths and devices that fail: a message and exit 1, no
traceback, and no file left half written."""

import asyncio
import os
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
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


# A document larger than the file size limit the export runs under (each API ~1 KB).
_LARGE_APP = {
    "app": {"name": "Large"},
    "apis": [
        {
            "api": f"api{i}",
            "description": "d" * 900,
            "steps": [{"id": "s", "type": "set", "value": 1}],
        }
        for i in range(100)
    ],
}
_FILE_SIZE_LIMIT = 64 * 1024  # above SQLite's 32 KB shared-memory file, below the document


def _apiforge(
    env: dict[str, str | None], *args: str, file_size_limit: int = -1, **popen: Any
) -> subprocess.CompletedProcess[bytes]:
    """The command in its own process (its own standard output; beyond `file_size_limit`
    bytes a write fails with EFBIG, as on a full disk)."""
    environment = {k: v for k, v in os.environ.items() if not k.startswith("APIFORGE_")}
    environment.update({k: v for k, v in env.items() if v is not None})
    code = (
        "import resource, signal; signal.signal(signal.SIGXFSZ, signal.SIG_IGN); "
        f"resource.setrlimit(resource.RLIMIT_FSIZE, ({file_size_limit}, {file_size_limit})); "
        "from apiforge.cli import main; main()"
    )
    return subprocess.run(  # noqa: S603 - our own entry point, fixed arguments
        [sys.executable, "-B", "-c", code, *args],
        env=environment,
        check=False,
        timeout=120,
        **popen,
    )


def _import_large_app(settings: Settings, tmp_path: Path) -> str:
    document = tmp_path / "large.json"
    document.write_bytes(orjson.dumps(_LARGE_APP))
    workspace_id = asyncio.run(_workspace(settings))
    imported = runner.invoke(
        apps_cli, ["import", str(document), "--workspace", workspace_id], env=_env(settings)
    )
    assert imported.exit_code == 0, imported.output
    return imported.stdout.strip().rsplit(" ", 1)[-1]


def test_a_failed_export_keeps_the_file_it_would_replace(
    settings: Settings, tmp_path: Path
) -> None:
    """Writing in place truncated the previous export first: a full disk lost it and left a
    partial document behind."""
    app_id = _import_large_app(settings, tmp_path)
    target = tmp_path / "exports" / "large.json"
    target.parent.mkdir()
    target.write_text('{"previous": "export"}')
    target.chmod(0o640)

    failed = _apiforge(
        _env(settings),
        *("apps", "export", app_id, "--out", str(target)),
        file_size_limit=_FILE_SIZE_LIMIT,
        capture_output=True,
    )
    assert failed.returncode == 1, failed.stderr
    assert f"error: cannot write {target}: File too large" in failed.stderr.decode()
    assert b"Traceback" not in failed.stderr
    assert target.read_text() == '{"previous": "export"}'
    assert [p.name for p in target.parent.iterdir()] == ["large.json"]  # no leftover

    done = runner.invoke(apps_cli, ["export", app_id, "--out", str(target)], env=_env(settings))
    assert done.exit_code == 0, done.output
    assert "(replacing the file that was there)" in done.stderr
    assert orjson.loads(target.read_bytes())["app"]["name"] == "Large"
    assert stat.S_IMODE(target.stat().st_mode) == 0o640
    assert [p.name for p in target.parent.iterdir()] == ["large.json"]


def test_export_to_a_full_standard_output_is_a_clear_error(
    settings: Settings, tmp_path: Path
) -> None:
    app_id = _import_large_app(settings, tmp_path)
    with open("/dev/full", "wb") as full:
        result = _apiforge(
            _env(settings), "apps", "export", app_id, stdout=full, stderr=subprocess.PIPE
        )
    assert result.returncode == 1, result.stderr
    errors = result.stderr.decode()
    assert errors == "error: cannot write to standard output: No space left on device\n"


def test_import_of_a_document_over_the_body_limit_is_refused(
    settings: Settings, tmp_path: Path
) -> None:
    """As `POST /api/v1/apps/import` (413 past `APIFORGE_MAX_BODY_BYTES`), the command refuses
    a larger file with one line and exit 2, having read no more of it than the limit."""
    env = {**_env(settings), "APIFORGE_MAX_BODY_BYTES": "2048"}
    workspace_id = asyncio.run(_workspace(settings))
    document = tmp_path / "app.json"
    for size, code in ((2048, 0), (2049, 2)):
        text = '{"app": {"name": "Sized"}}'
        document.write_text(text + " " * (size - len(text)))  # JSON allows the blanks
        assert document.stat().st_size == size
        result = runner.invoke(
            apps_cli, ["import", str(document), "--workspace", workspace_id], env=env
        )
        assert result.exit_code == code, result.output
    assert isinstance(result.exception, SystemExit)  # not a traceback
    assert result.output == f"error: {document} is over 2048 bytes (APIFORGE_MAX_BODY_BYTES)\n"
