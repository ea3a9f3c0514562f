"""The command line on bad ground: a schema `serve` cannot use, an out-of-range port, a database
`db upgrade` cannot reach or does not know, an unsupported database driver, and several
processes creating the generated secret key at once. Each is one line and an exit code."""

import asyncio
import sys
from pathlib import Path

import pytest
from alembic import command
from sqlalchemy import text
from typer.testing import CliRunner

import apiforge.core.settings as settings_module
from apiforge.cli import app, main
from apiforge.core.db import make_engine
from apiforge.core.settings import InvalidSettingsError, Settings
from apiforge.migrate import alembic_config
from apiforge.tools.hashing import random_secret

Env = dict[str, str | None]
runner = CliRunner()
# Nothing listens on port 1 of the loopback: the connection is refused at once.
UNREACHABLE = "postgresql+asyncpg://apiforge:s3cret-pw@127.0.0.1:1/apiforge"


def _env(settings: Settings) -> Env:
    """The test's own database (SQLite file or PostgreSQL clone), no Redis, no bootstrap."""
    return {
        "APIFORGE_DATA_DIR": str(settings.data_dir),
        "APIFORGE_DATABASE_URL": settings.database_url,
        "APIFORGE_SECRET_KEY": settings.secret_key,
        "APIFORGE_REDIS_URL": None,
        "APIFORGE_HOST": None,
        "APIFORGE_PORT": None,
        "APIFORGE_LOG_LEVEL": "WARNING",
    }


@pytest.fixture
def served(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The ports `uvicorn.run` was asked to serve on (it is not started)."""
    import uvicorn

    ports: list[int] = []
    monkeypatch.setattr(uvicorn, "run", lambda *a, **kw: ports.append(kw["port"]))
    return ports


async def _set_revision(settings: Settings, revision: str) -> None:
    engine = make_engine(settings.resolved_database_url, pool=False)
    try:
        async with engine.begin() as connection:
            await connection.execute(
                text("UPDATE alembic_version SET version_num = :rev"), {"rev": revision}
            )
    finally:
        await engine.dispose()


@pytest.mark.parametrize("port", ["70000", "65536", "-1"])
def test_serve_refuses_a_port_out_of_range(
    settings: Settings, served: list[int], port: str
) -> None:
    """70000 used to bind port 4464 (70000 - 65536) while announcing 70000."""
    result = runner.invoke(app, ["serve", "--port", port], env=_env(settings))
    assert result.exit_code == 2, result.output
    assert "--port" in result.output
    assert served == []


@pytest.mark.parametrize("revision", ["base", "0012"])
def test_serve_refuses_a_database_that_was_not_upgraded(
    settings: Settings, served: list[int], revision: str
) -> None:
    """It used to start, report ready on /readyz and answer every request with a 500."""
    env = _env(settings)
    command.downgrade(alembic_config(settings.resolved_database_url), revision)
    refused = runner.invoke(app, ["serve", "--port", "8123"], env=env)
    assert refused.exit_code == 1, refused.output
    assert isinstance(refused.exception, SystemExit)  # not a traceback
    assert "not migrated" in refused.stderr
    assert "apiforge db upgrade" in refused.stderr
    assert served == []

    upgraded = runner.invoke(app, ["db", "upgrade"], env=env)
    assert upgraded.exit_code == 0, upgraded.output
    started = runner.invoke(app, ["serve", "--port", "8123"], env=env)
    assert started.exit_code == 0, started.output
    assert served == [8123]


def test_serve_refuses_a_new_embedded_data_dir_without_creating_a_database(
    tmp_path: Path, served: list[int]
) -> None:
    data_dir = tmp_path / "new"
    env: Env = {"APIFORGE_DATA_DIR": str(data_dir), "APIFORGE_DATABASE_URL": None}
    result = runner.invoke(app, ["serve"], env=env)
    assert result.exit_code == 1, result.output
    assert "apiforge db upgrade" in result.stderr
    assert not (data_dir / "apiforge.db").exists()
    assert served == []


def test_a_database_migrated_by_a_newer_release_still_serves_but_is_not_downgraded(
    settings: Settings, served: list[int]
) -> None:
    """Each migration keeps the previous release serving (STYLE.md), so an older node restarting
    during a rolling upgrade starts; its `db upgrade` explains instead of a traceback."""
    env = _env(settings)
    asyncio.run(_set_revision(settings, "9999"))
    upgrade = runner.invoke(app, ["db", "upgrade"], env=env)
    assert upgrade.exit_code == 1, upgrade.output
    assert isinstance(upgrade.exception, SystemExit)
    assert upgrade.stderr.startswith("error: cannot migrate the database")
    assert "9999" in upgrade.stderr
    started = runner.invoke(app, ["serve", "--port", "8124"], env=env)
    assert started.exit_code == 0, started.output
    assert served == [8124]


def test_commands_on_an_unreachable_database_print_one_line(
    tmp_path: Path, served: list[int]
) -> None:
    env: Env = {"APIFORGE_DATA_DIR": str(tmp_path), "APIFORGE_DATABASE_URL": UNREACHABLE}
    for arguments in (["db", "upgrade"], ["serve"]):
        result = runner.invoke(app, arguments, env=env)
        assert result.exit_code == 1, result.output
        assert isinstance(result.exception, SystemExit), arguments  # not a traceback
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1, result.stderr
        assert lines[0].startswith("error: "), lines
        assert "s3cret-pw" not in result.output
    assert served == []


def test_db_upgrade_into_a_data_dir_it_cannot_create_prints_one_line(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    env: Env = {"APIFORGE_DATA_DIR": str(blocker / "data"), "APIFORGE_DATABASE_URL": None}
    result = runner.invoke(app, ["db", "upgrade"], env=env)
    assert result.exit_code == 1, result.output
    assert isinstance(result.exception, SystemExit)
    assert result.stderr.startswith("error: cannot migrate the database")
    assert str(blocker) in result.stderr


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://apiforge:s3cret-pw@db/apiforge",  # psycopg2: not installed, not async
        "postgres+asyncpg://apiforge:s3cret-pw@db/apiforge",  # no such dialect
        "mysql+aiomysql://apiforge:s3cret-pw@db/apiforge",
        "sqlite:///data/apiforge.db",  # the synchronous driver
    ],
)
def test_unsupported_database_drivers_are_refused_at_start(
    url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """They used to pass validation and fail at the first connection with a traceback."""
    with pytest.raises(InvalidSettingsError, match="APIFORGE_DATABASE_URL"):
        Settings(data_dir=tmp_path, database_url=url)
    monkeypatch.setenv("APIFORGE_DATABASE_URL", url)
    monkeypatch.setenv("APIFORGE_DATA_DIR", str(tmp_path))
    monkeypatch.setattr(sys, "argv", ["apiforge", "db", "upgrade"])
    with pytest.raises(SystemExit) as stopped:
        main()
    assert stopped.value.code == 2
    err = capsys.readouterr().err
    assert "APIFORGE_DATABASE_URL" in err
    assert "postgresql+asyncpg://" in err  # what to write instead
    assert "s3cret-pw" not in err


@pytest.mark.parametrize(
    "url",
    ["postgresql+asyncpg://u:p@db:5432/apiforge", "sqlite+aiosqlite:///data/apiforge.db"],
)
def test_the_supported_drivers_are_accepted(url: str) -> None:
    assert Settings(database_url=url).database_url == url


def test_processes_creating_the_secret_key_together_share_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`serve --workers 4` on a new data dir: a worker that generated its own key after another
    one's rejected that one's tokens, and what it encrypted was lost at the next restart."""
    first = Settings(data_dir=tmp_path, secret_key=None)
    second = Settings(data_dir=tmp_path, secret_key=None)
    raced: list[str] = []
    calls: list[int] = []

    def racing(length: int) -> str:
        calls.append(length)
        if len(calls) == 1:  # while the first process generates its key, the second gets there
            raced.append(second.signing_key)
        return random_secret(length)

    monkeypatch.setattr(settings_module, "random_secret", racing)
    key = first.signing_key
    assert raced == [key]
    stored = tmp_path / "secret.key"
    assert stored.read_text() == key
    assert stored.stat().st_mode & 0o777 == 0o600
    assert Settings(data_dir=tmp_path, secret_key=None).signing_key == key  # after a restart


def test_an_empty_secret_key_file_is_refused_not_used(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "secret.key").write_text("\n")
    monkeypatch.setattr(settings_module, "_KEY_READ_ATTEMPTS", 2, raising=False)
    with pytest.raises(InvalidSettingsError, match="is empty"):
        _ = Settings(data_dir=tmp_path, secret_key=None).signing_key


@pytest.mark.parametrize(
    "arguments",
    [
        [],
        ["version"],
        ["serve"],
        ["db"],
        ["db", "upgrade"],
        ["admin"],
        ["admin", "create"],
        ["admin", "ensure"],
        ["apps"],
        ["apps", "export"],
        ["apps", "import"],
    ],
)
def test_every_command_has_help(arguments: list[str]) -> None:
    result = runner.invoke(app, [*arguments, "--help"], env={"APIFORGE_PORT": "not-a-port"})
    assert result.exit_code == 0, result.output
    assert "Usage:" in result.stdout


def test_a_data_dir_that_cannot_hold_the_secret_key_is_an_invalid_setting(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    with pytest.raises(InvalidSettingsError, match="APIFORGE_SECRET_KEY"):
        _ = Settings(data_dir=blocker / "data", secret_key=None).signing_key


def test_serve_refuses_a_data_dir_it_cannot_create_the_secret_key_in(
    settings: Settings,
    served: list[int],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A migrated database, but no APIFORGE_SECRET_KEY and a data dir that cannot be created (a
    read-only container): serve started, and each worker died building the app with a
    traceback of `mkdir`."""
    blocker = settings.data_dir.parent / "a-file"
    blocker.write_text("not a directory")
    monkeypatch.setenv("APIFORGE_DATABASE_URL", settings.resolved_database_url)
    monkeypatch.setenv("APIFORGE_DATA_DIR", str(blocker / "data"))
    monkeypatch.delenv("APIFORGE_SECRET_KEY", raising=False)
    monkeypatch.setattr(sys, "argv", ["apiforge", "serve", "--port", "8125"])
    with pytest.raises(SystemExit) as stopped:
        main()
    assert stopped.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: invalid configuration: cannot create or read"), err
    assert "APIFORGE_SECRET_KEY" in err
    assert "Traceback" not in err
    assert served == []
