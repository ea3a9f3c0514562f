"""Settings a server cannot run with are refused at start, naming the variable: a database or
Redis URL with a port no socket has (a traceback at the first connection or at start-up), and
durations so long that the time they end cannot be written (every sign-in, or every keyed
write, a 500). The longest accepted durations work."""

import sys
from pathlib import Path

import pytest
from httpx import AsyncClient
from typer.testing import CliRunner

from apiforge.cli import app as cli
from apiforge.cli import main
from apiforge.core.settings import InvalidSettingsError, Settings
from tests.e2e._workspaces import data_of
from tests.factories import app_client, register

runner = CliRunner()
TEN_YEARS = 3650 * 86400
DURATIONS = (
    "refresh_token_ttl",
    "idempotency_retention_seconds",
    "idempotency_lease_seconds",
    "idempotency_token_ttl_seconds",
)


def _stopped(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> str:
    """What `main` prints when it stops: exit 2, one error naming the variable."""
    with pytest.raises(SystemExit) as stopped:
        main()
    assert stopped.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: invalid configuration"), err
    assert "Traceback" not in err
    return err


def test_a_database_url_with_a_port_out_of_range_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`db upgrade` and `serve` used to end in asyncpg's OverflowError traceback."""
    url = "postgresql+asyncpg://apiforge:s3cret-pw@127.0.0.1:99999/apiforge"
    monkeypatch.setenv("APIFORGE_DATABASE_URL", url)
    monkeypatch.setenv("APIFORGE_DATA_DIR", str(tmp_path))
    monkeypatch.setattr(sys, "argv", ["apiforge", "db", "upgrade"])
    err = _stopped(monkeypatch, capsys)
    assert "APIFORGE_DATABASE_URL" in err
    assert "port" in err
    assert "s3cret-pw" not in err


@pytest.mark.parametrize(
    "url",
    [
        "redis://:s3cret-pw@cache:99999/0",
        "redis://:s3cret-pw@cache:six/0",
        "redis://:s3cret-pw@[::1/0",
    ],
)
def test_a_malformed_redis_url_is_refused_before_serving(
    url: str,
    settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`serve` used to pass its checks and crash in every worker building the app (ValueError
    from the Redis client, a traceback)."""
    import uvicorn

    served: list[object] = []
    monkeypatch.setattr(uvicorn, "run", lambda *a, **kw: served.append(kw))
    monkeypatch.setenv("APIFORGE_DATA_DIR", str(settings.data_dir))
    monkeypatch.setenv("APIFORGE_DATABASE_URL", settings.database_url)
    monkeypatch.setenv("APIFORGE_REDIS_URL", url)
    monkeypatch.setattr(sys, "argv", ["apiforge", "serve"])
    err = _stopped(monkeypatch, capsys)
    assert "APIFORGE_REDIS_URL" in err
    assert "s3cret-pw" not in err
    assert served == []


def test_well_formed_redis_urls_are_kept() -> None:
    for url in ("redis://cache:6379/0", "rediss://:pw@[::1]:6380/1", "unix:///run/redis.sock"):
        assert Settings(redis_url=url).redis_url == url
    assert runner.invoke(cli, ["version"]).exit_code == 0


@pytest.mark.parametrize("field", DURATIONS)
def test_a_duration_past_ten_years_is_refused(field: str) -> None:
    """10**12 s used to be accepted: the end of a refresh token (every sign-in), of a claim
    (every keyed write) or of an anti-duplicate token was then past year 9999, a 500; 10**14 s
    of retention stopped the server building its app with an OverflowError traceback."""
    with pytest.raises(InvalidSettingsError, match=f"APIFORGE_{field.upper()}"):
        Settings(**{field: 10**12})


async def test_the_longest_durations_serve(settings: Settings) -> None:
    longest = settings.model_copy(update=dict.fromkeys(DURATIONS, TEN_YEARS))
    async with app_client(longest) as (_, client):
        await _sign_in_and_write(client)


async def _sign_in_and_write(client: AsyncClient) -> None:
    user = await register(client)
    refreshed = await client.post("/api/v1/auth/refresh", json={"refreshToken": user.refresh_token})
    data_of(refreshed)
    data_of(await client.get("/api/v1/idempotency-tokens", headers=user.headers))
    keyed = {**user.headers, "Idempotency-Key": "ten-years"}
    created = await client.post("/api/v1/workspaces", json={"name": "Team"}, headers=keyed)
    data_of(created)
