"""Malformed `APIFORGE_*` values stop the process at start with an error naming the variable,
never later at a request (or never: a page-size default over the cap, an allow-list entry that
can match nothing)."""

from pathlib import Path

import pytest

from apiforge.core.settings import InvalidSettingsError, Settings


@pytest.fixture(autouse=True)
def _no_dotenv(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)  # no `.env` of the working directory


@pytest.mark.parametrize(
    ("variable", "value", "hint"),
    [
        ("APIFORGE_PORT", "eighty", "valid integer"),
        ("APIFORGE_PORT", "-1", "greater than or equal to 0"),
        ("APIFORGE_PORT", "70000", "less than or equal to 65535"),
        ("APIFORGE_PAGE_SIZE_MAX", "0", "greater than or equal to 1"),
        ("APIFORGE_MAX_BODY_BYTES", "1MB", "valid integer"),
        ("APIFORGE_TRUSTED_PROXIES", "10.0.0.1", "JSON list"),
        ("APIFORGE_TRUSTED_PROXIES", '["10.0.0.1", "proxy.internal"]', "'proxy.internal'"),
        ("APIFORGE_TRUSTED_PROXIES", '["10.0.0.0/33"]', "'10.0.0.0/33'"),
        ("APIFORGE_HTTP_ALLOW_HOSTS", "[bad json", "JSON list"),
        ("APIFORGE_HTTP_ALLOW_HOSTS", '{"host": "a"}', "valid list"),
        ("APIFORGE_HTTP_ALLOW_HOSTS", '["http://intranet.local/"]', "'http://intranet.local/'"),
        ("APIFORGE_HTTP_ALLOW_HOSTS", '["intranet.local:8080"]', "'intranet.local:8080'"),
        ("APIFORGE_HTTP_ALLOW_HOSTS", '[""]', "''"),
        ("APIFORGE_DATABASE_URL", "not a url", "not a database URL"),
        ("APIFORGE_REDIS_URL", "127.0.0.1:6379", "redis://"),
        ("APIFORGE_LOG_LEVEL", "LOUD", "DEBUG, INFO"),
        # A window past ten years, as every other duration: Redis refuses such an expiry.
        ("APIFORGE_LOGIN_WINDOW_SECONDS", str(10**20), "less than or equal to 315360000"),
    ],
)
def test_a_malformed_variable_fails_at_start_naming_it(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, hint: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(InvalidSettingsError) as refused:
        Settings()
    assert f"{variable}: " in str(refused.value)
    assert hint in str(refused.value)


def test_the_error_never_shows_the_value_a_url_may_hold_a_password() -> None:
    with pytest.raises(InvalidSettingsError) as refused:
        Settings(redis_url="http://:hunter2-secret@cache:6379/0")
    assert "APIFORGE_REDIS_URL" in str(refused.value)
    assert "hunter2" not in str(refused.value)


def test_a_default_page_size_over_the_cap_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    # Accepted before: every list without `pageSize` then answered 500 rows under a cap of 100.
    monkeypatch.setenv("APIFORGE_PAGE_SIZE_DEFAULT", "500")
    with pytest.raises(InvalidSettingsError) as refused:
        Settings()
    assert "APIFORGE_PAGE_SIZE_DEFAULT (500) is over APIFORGE_PAGE_SIZE_MAX (100)" in str(
        refused.value
    )
    monkeypatch.setenv("APIFORGE_PAGE_SIZE_MAX", "500")
    assert Settings().page_size_default == 500


def test_well_formed_lists_and_urls_are_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("APIFORGE_TRUSTED_PROXIES", '["10.0.0.0/8", " 192.168.1.7 ", "::1", "*"]')
    monkeypatch.setenv(
        "APIFORGE_HTTP_ALLOW_HOSTS",
        '["10.1.2.0/24", "Intranet.Local.", "[fd00::1]", "xn--bcher-kva.example", "svc_a"]',
    )
    monkeypatch.setenv("APIFORGE_REDIS_URL", "rediss://:pw@cache:6380/1")
    monkeypatch.setenv("APIFORGE_DATABASE_URL", "postgresql+asyncpg://u:p@db/apiforge")
    monkeypatch.setenv("APIFORGE_LOG_LEVEL", "warning")
    monkeypatch.setenv("APIFORGE_PORT", "0")
    settings = Settings()
    assert settings.trusted_proxies == ["10.0.0.0/8", " 192.168.1.7 ", "::1", "*"]
    assert settings.http_allow_hosts[1] == "Intranet.Local."
    assert settings.redis_url == "rediss://:pw@cache:6380/1"
    assert settings.port == 0


def test_empty_lists_and_unset_urls_keep_their_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("APIFORGE_TRUSTED_PROXIES", "")
    monkeypatch.setenv("APIFORGE_HTTP_ALLOW_HOSTS", "[]")
    monkeypatch.setenv("APIFORGE_REDIS_URL", "")
    settings = Settings()
    assert settings.trusted_proxies == []
    assert settings.http_allow_hosts == []
    assert not settings.redis_url


def test_an_access_token_outliving_the_refresh_token_is_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Accepted before: a session whose refresh token had run out was hidden from
    # `/user/sessions`, and so could not be ended there, while its access token still worked.
    monkeypatch.setenv("APIFORGE_ACCESS_TOKEN_TTL", "900")
    monkeypatch.setenv("APIFORGE_REFRESH_TOKEN_TTL", "600")
    with pytest.raises(InvalidSettingsError) as refused:
        Settings()
    assert "APIFORGE_ACCESS_TOKEN_TTL (900) is over APIFORGE_REFRESH_TOKEN_TTL (600)" in str(
        refused.value
    )
    monkeypatch.setenv("APIFORGE_REFRESH_TOKEN_TTL", "900")
    assert Settings().access_token_ttl == 900
