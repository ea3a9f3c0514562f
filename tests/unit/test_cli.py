"""The `apiforge` command line against a real, freshly migrated database (SQLite or PostgreSQL)."""

import asyncio
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from httpx import ASGITransport, AsyncClient
from sqlalchemy import select, update
from typer.testing import CliRunner

import apiforge
from apiforge.accounts.models import Account
from apiforge.app import create_app, shutdown
from apiforge.cli import DEFAULT_ADMIN_EMAIL, SQLITE_WORKERS, app
from apiforge.core.db import make_engine
from apiforge.core.settings import Settings

Env = dict[str, str | None]
runner = CliRunner()


@pytest.fixture
def cli_env(settings: Settings, tmp_path: Path) -> Env:
    """Environment for the commands: a data dir that does not exist yet (SQLite is created by
    `db upgrade`), or the test's PostgreSQL database; no inherited bootstrap variables."""
    env: Env = {
        "APIFORGE_DATA_DIR": str(tmp_path / "cli-data"),
        "APIFORGE_DATABASE_URL": settings.database_url,
        "APIFORGE_REDIS_URL": settings.redis_url,
        "APIFORGE_SECRET_KEY": settings.secret_key,
        "APIFORGE_HOST": None,
        "APIFORGE_PORT": None,
        "APIFORGE_ADMIN_EMAIL": None,
        "APIFORGE_ADMIN_PASSWORD": None,
    }
    result = runner.invoke(app, ["db", "upgrade"], env=env)
    assert result.exit_code == 0, result.output
    assert "database is up to date" in result.stdout
    return env


def _settings(env: Env) -> Settings:
    return Settings(
        data_dir=Path(env["APIFORGE_DATA_DIR"] or ""),
        database_url=env["APIFORGE_DATABASE_URL"] or "",
        secret_key=env["APIFORGE_SECRET_KEY"],
        log_level="WARNING",
    )


async def _accounts_async(settings: Settings) -> dict[str, tuple[bool, str]]:
    engine = make_engine(settings.resolved_database_url, pool=False)
    try:
        async with engine.connect() as connection:
            rows = await connection.execute(select(Account.email, Account.is_admin, Account.name))
            return {row.email: (row.is_admin, row.name) for row in rows}
    finally:
        await engine.dispose()


def accounts(env: Env) -> dict[str, tuple[bool, str]]:
    """email -> (is_admin, name), read straight from the database."""
    return asyncio.run(_accounts_async(_settings(env)))


async def _sign_in_async(settings: Settings, email: str, password: str) -> int | None:
    application = create_app(settings)
    transport = ASGITransport(app=application)
    try:
        async with AsyncClient(transport=transport, base_url="http://testserver") as http:
            login = await http.post(
                "/api/v1/auth/login", json={"email": email, "password": password}
            )
            if login.status_code != 200:
                return None
            token = login.json()["data"]["accessToken"]
            profile = await http.get(
                "/api/v1/user/profile", headers={"Authorization": f"Bearer {token}"}
            )
            is_admin: int = profile.json()["data"]["isAdmin"]
            return is_admin
    finally:
        await shutdown(application)


def sign_in(env: Env, email: str, password: str) -> int | None:
    """Sign in over the HTTP API; the profile's isAdmin (1/0), or None when refused."""
    return asyncio.run(_sign_in_async(_settings(env), email, password))


def test_version_prints_the_package_version() -> None:
    result = runner.invoke(app, ["version"])
    assert result.exit_code == 0
    assert result.stdout.strip() == apiforge.__version__


def test_upgrade_is_repeatable_and_creates_the_embedded_database(
    cli_env: Env, settings: Settings
) -> None:
    again = runner.invoke(app, ["db", "upgrade"], env=cli_env)
    assert again.exit_code == 0, again.output
    if settings.is_sqlite:  # PostgreSQL runs use the test's database instead of a file
        assert (Path(cli_env["APIFORGE_DATA_DIR"] or "") / "apiforge.db").is_file()


def test_admin_ensure_creates_one_admin_and_prints_working_credentials(cli_env: Env) -> None:
    result = runner.invoke(app, ["admin", "ensure"], env=cli_env)
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "http://127.0.0.1:8000/docs" in out
    email_match = re.search(r"email:\s+(\S+)", out)
    password_match = re.search(r"password:\s+(\S+)", out)
    assert email_match is not None
    assert password_match is not None
    email, password = email_match.group(1), password_match.group(1)
    assert email == DEFAULT_ADMIN_EMAIL
    assert len(password) >= 16
    assert "curl -s -X POST http://127.0.0.1:8000/api/v1/auth/login" in out
    assert f'"password": "{password}"' in out
    assert accounts(cli_env) == {email: (True, "Administrator")}
    assert sign_in(cli_env, email, password) == 1

    again = runner.invoke(app, ["admin", "ensure"], env=cli_env)
    assert again.exit_code == 0
    assert "already exists" in again.stdout
    assert password not in again.stdout
    assert accounts(cli_env) == {email: (True, "Administrator")}


def test_admin_ensure_uses_the_environment_and_never_echoes_its_password(cli_env: Env) -> None:
    env = {
        **cli_env,
        "APIFORGE_ADMIN_EMAIL": "Root@Example.com",
        "APIFORGE_ADMIN_PASSWORD": "from-the-environment",
        "APIFORGE_HOST": "0.0.0.0",  # noqa: S104 - the wildcard is what is being tested
        "APIFORGE_PORT": "9100",
    }
    result = runner.invoke(app, ["admin", "ensure"], env=env)
    assert result.exit_code == 0, result.output
    assert "from-the-environment" not in result.output
    assert "$APIFORGE_ADMIN_PASSWORD" in result.stdout
    assert "http://127.0.0.1:9100/docs" in result.stdout
    assert accounts(cli_env) == {"root@example.com": (True, "Administrator")}
    assert sign_in(cli_env, "root@example.com", "from-the-environment") == 1


def test_admin_ensure_never_promotes_an_existing_regular_account(cli_env: Env) -> None:
    created = runner.invoke(
        app,
        ["admin", "create", "--email", "admin@example.com", "--password", "first-pass"],
        env=cli_env,
    )
    assert created.exit_code == 0
    asyncio.run(_demote(_settings(cli_env), "admin@example.com"))
    env = {**cli_env, "APIFORGE_ADMIN_EMAIL": "admin@example.com"}
    result = runner.invoke(app, ["admin", "ensure"], env=env)
    assert result.exit_code == 1
    assert "already a regular account" in result.stderr
    assert accounts(cli_env) == {"admin@example.com": (False, "")}


async def _demote(settings: Settings, email: str) -> None:
    engine = make_engine(settings.resolved_database_url, pool=False)
    try:
        async with engine.begin() as connection:
            await connection.execute(
                update(Account).where(Account.email == email).values(is_admin=False)
            )
    finally:
        await engine.dispose()


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("APIFORGE_ADMIN_EMAIL", "not-an-email", "email"),
        ("APIFORGE_ADMIN_EMAIL", "admin@localhost", "email"),
        ("APIFORGE_ADMIN_PASSWORD", "short", "password"),
    ],
)
def test_admin_ensure_refuses_bad_bootstrap_values(
    cli_env: Env, variable: str, value: str, message: str
) -> None:
    result = runner.invoke(app, ["admin", "ensure"], env={**cli_env, variable: value})
    assert result.exit_code == 1
    assert message in result.stderr
    assert accounts(cli_env) == {}


def test_admin_create_with_password_option(cli_env: Env) -> None:
    result = runner.invoke(
        app,
        [
            "admin",
            "create",
            "--email",
            "ops@example.com",
            "--password",
            "opsopsops",
            "--name",
            "'; DROP TABLE accounts; --",
        ],
        env=cli_env,
    )
    assert result.exit_code == 0, result.output
    assert "administrator ops@example.com created" in result.stdout
    assert "opsopsops" not in result.output
    assert accounts(cli_env) == {"ops@example.com": (True, "'; DROP TABLE accounts; --")}
    assert sign_in(cli_env, "ops@example.com", "opsopsops") == 1


def test_admin_create_reads_password_from_stdin(cli_env: Env) -> None:
    result = runner.invoke(
        app,
        ["admin", "create", "--email", "ci@example.com", "--password-stdin"],
        input="piped password\n",
        env=cli_env,
    )
    assert result.exit_code == 0, result.output
    assert sign_in(cli_env, "ci@example.com", "piped password") == 1


def test_admin_create_prompts_hidden_with_confirmation(cli_env: Env) -> None:
    result = runner.invoke(
        app,
        ["admin", "create", "--email", "me@example.com"],
        input="typed-secret\nmistyped\ntyped-secret\ntyped-secret\n",
        env=cli_env,
    )
    assert result.exit_code == 0, result.output
    assert "typed-secret" not in result.output  # hidden input is not echoed
    assert "do not match" in result.output
    assert sign_in(cli_env, "me@example.com", "typed-secret") == 1


@pytest.mark.parametrize(
    ("arguments", "code", "message"),
    [
        (["--email", "nope", "--password", "long-enough"], 1, "email"),
        (["--email", "a@example.com", "--password", "short"], 1, "at least 8"),
        (["--email", "a@example.com", "--password", "x" * 129], 1, "at most 128"),
        (["--email", "a@example.com", "--password", "long-enough", "--name", "n" * 101], 1, "name"),
        (
            ["--email", "a@example.com", "--password", "long-enough", "--password-stdin"],
            2,
            "either",
        ),
    ],
)
def test_admin_create_refuses_bad_input_and_creates_nothing(
    cli_env: Env, arguments: list[str], code: int, message: str
) -> None:
    result = runner.invoke(app, ["admin", "create", *arguments], env=cli_env, input="x\n")
    assert result.exit_code == code, result.output
    assert message in result.stderr
    assert accounts(cli_env) == {}


def test_admin_create_refuses_a_taken_email(cli_env: Env) -> None:
    first = ["admin", "create", "--email", "dup@example.com", "--password", "password-one"]
    assert runner.invoke(app, first, env=cli_env).exit_code == 0
    second = ["admin", "create", "--email", "DUP@example.com", "--password", "password-two"]
    result = runner.invoke(app, second, env=cli_env)
    assert result.exit_code == 1
    assert "already exists" in result.stderr
    assert sign_in(cli_env, "dup@example.com", "password-two") is None
    assert sign_in(cli_env, "dup@example.com", "password-one") == 1


def test_admin_commands_explain_an_unmigrated_database(tmp_path: Path) -> None:
    env: Env = {
        "APIFORGE_DATA_DIR": str(tmp_path / "empty"),
        "APIFORGE_DATABASE_URL": None,
        "APIFORGE_ADMIN_EMAIL": None,
        "APIFORGE_ADMIN_PASSWORD": None,
    }
    (tmp_path / "empty").mkdir()
    result = runner.invoke(app, ["admin", "ensure"], env=env)
    assert result.exit_code == 1
    assert "apiforge db upgrade" in result.stderr
    assert result.exception is None or isinstance(result.exception, SystemExit)


def test_serve_refuses_reload_with_several_workers() -> None:
    result = runner.invoke(app, ["serve", "--reload", "--workers", "2"])
    assert result.exit_code == 2
    assert "--reload" in result.stderr


def test_serve_refuses_several_workers_on_the_embedded_database(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Charging and gateway idempotency keys on SQLite are one process's: a second worker could
    run an `httpRequest` step twice under one key (tests/e2e/test_review_workers.py)."""
    import uvicorn

    started: list[int] = []
    monkeypatch.setattr(uvicorn, "run", lambda *a, **kw: started.append(kw["workers"]))
    for redis_url in (None, "redis://127.0.0.1:6379/0"):  # Redis does not make it one process
        env: Env = {
            "APIFORGE_DATA_DIR": str(tmp_path / "never-created"),
            "APIFORGE_DATABASE_URL": None,
            "APIFORGE_REDIS_URL": redis_url,
        }
        result = runner.invoke(app, ["serve", "--workers", "2"], env=env)
        assert result.exit_code == 2, result.output
        assert result.stderr == f"error: {SQLITE_WORKERS}\n"
    assert started == []
    assert not (tmp_path / "never-created").exists()  # refused before anything was touched


@pytest.fixture
def cluster_env(cli_env: Env, monkeypatch: pytest.MonkeyPatch) -> Env:
    """`cli_env` on PostgreSQL, where `--workers` is allowed (with `uvicorn.run` replaced, the
    database is never reached: its migration check is skipped)."""
    from apiforge import cli

    monkeypatch.setattr(cli, "_require_migrated", lambda _settings: None)
    return {**cli_env, "APIFORGE_DATABASE_URL": "postgresql+asyncpg://u:p@db:5432/apiforge"}


def test_serve_gives_several_workers_a_fresh_metrics_directory_of_its_own(
    monkeypatch: pytest.MonkeyPatch, cluster_env: Env, tmp_path: Path
) -> None:
    """`/metrics` adds up the workers' files there (http/metrics.py): one directory per server,
    empty at start and owner-only; an inherited one (another server's) is never used, and one
    process keeps its figures in memory."""
    import uvicorn

    inherited = tmp_path / "another-server"
    inherited.mkdir()
    (inherited / "counter_1.db").write_bytes(b"stale")
    seen: list[tuple[int, str | None, list[str], int]] = []

    def run(*_args: object, **kwargs: int) -> None:
        directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
        listing = os.listdir(directory) if directory else []
        mode = os.stat(directory).st_mode & 0o777 if directory else 0
        seen.append((kwargs["workers"], directory, listing, mode))

    monkeypatch.setattr(uvicorn, "run", run)
    env: Env = {**cluster_env, "PROMETHEUS_MULTIPROC_DIR": str(inherited)}
    for workers in ("2", "1"):
        result = runner.invoke(app, ["serve", "--workers", workers], env=env)
        assert result.exit_code == 0, result.output
    (several, several_dir, listing, mode), (one, one_dir, _, _) = seen
    assert several == 2
    assert several_dir is not None
    assert several_dir != str(inherited)
    assert listing == []
    assert mode == 0o700
    assert not Path(several_dir).exists()  # removed when the server stopped
    assert one == 1
    assert one_dir is None


def test_serve_warns_that_workers_without_redis_keep_limits_and_nonces_apart(
    monkeypatch: pytest.MonkeyPatch, cluster_env: Env
) -> None:
    import uvicorn

    started: list[int] = []
    monkeypatch.setattr(uvicorn, "run", lambda *a, **kw: started.append(kw["workers"]))
    alone: Env = {**cluster_env, "APIFORGE_REDIS_URL": None}
    several = runner.invoke(app, ["serve", "--workers", "3"], env=alone)
    assert several.exit_code == 0, several.output
    assert "warning: without APIFORGE_REDIS_URL" in several.stderr
    one = runner.invoke(app, ["serve"], env=alone)
    shared = runner.invoke(
        app,
        ["serve", "--workers", "3"],
        env={**cluster_env, "APIFORGE_REDIS_URL": "redis://127.0.0.1:6379/0"},
    )
    assert "warning" not in one.stderr + shared.stderr
    assert started == [3, 1, 3]


def test_python_dash_m_apiforge_runs_the_command() -> None:
    """`python -m apiforge` is the same command as the `apiforge` script."""
    result = subprocess.run(
        [sys.executable, "-m", "apiforge", "version"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == apiforge.__version__
