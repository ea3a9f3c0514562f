"""App `env`: secrets sealed at rest, opened only for calls, merged by name."""

from pathlib import Path

from apiforge.builder.env import merge_secrets, new_env, runtime_env, secret_names
from apiforge.core.settings import Settings


def _settings(tmp_path: Path, key: str) -> Settings:
    return Settings(data_dir=tmp_path, secret_key=key)


def test_secrets_are_sealed_and_open_for_calls(tmp_path: Path) -> None:
    settings = _settings(tmp_path, "k" * 48)
    env = merge_secrets(settings, new_env({"region": "eu"}), {"API_KEY": "plain-value"})
    assert env["config"] == {"region": "eu"}
    assert env["secrets"]["API_KEY"] != "plain-value"
    assert "plain-value" not in str(env)
    assert runtime_env(settings, env) == {
        "config": {"region": "eu"},
        "secrets": {"API_KEY": "plain-value"},
    }


def test_merge_sets_replaces_and_deletes_by_name(tmp_path: Path) -> None:
    settings = _settings(tmp_path, "k" * 48)
    env = merge_secrets(settings, new_env(), {"A": "1", "B": "2"})
    env = merge_secrets(settings, env, {"A": None, "B": "3", "C": "4"})
    assert secret_names(env) == ["B", "C"]
    assert runtime_env(settings, env)["secrets"] == {"B": "3", "C": "4"}


def test_secret_sealed_under_another_key_opens_empty(tmp_path: Path) -> None:
    env = merge_secrets(_settings(tmp_path, "a" * 48), new_env(), {"A": "1"})
    assert runtime_env(_settings(tmp_path, "b" * 48), env)["secrets"] == {"A": ""}
