"""An app's `env` (what expressions see as `env`): plain `config` and encrypted `secrets`.

Stored as `{"config": {...}, "secrets": {name: fernet_token}}` in `apps.env`. Secrets are sealed
with a Fernet key derived from the server's signing key, so a database dump alone does not reveal
them; they are opened only when a call needs them (`runtime_env`) and never returned by the API.
"""

from typing import Any

from cryptography.fernet import Fernet, InvalidToken

from apiforge.core.settings import Settings
from apiforge.tools.sealing import derived_fernet

# Purpose-specific HKDF `info`: these ciphertexts stay independent of every other use of the key.
_INFO = b"apiforge/apps/env-secrets/v1"


def _fernet(settings: Settings) -> Fernet:
    # Derived once per key (tools/sealing.py): `runtime_env` runs on every call.
    return derived_fernet(settings.signing_key, _INFO)


def seal(settings: Settings, value: str) -> str:
    return _fernet(settings).encrypt(value.encode()).decode()


def new_env(config: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"config": dict(config or {}), "secrets": {}}


def merge_secrets(
    settings: Settings, env: dict[str, Any], changes: dict[str, str | None]
) -> dict[str, Any]:
    """A new env with `changes` applied: a value seals and sets, `None` deletes."""
    secrets = dict(env.get("secrets") or {})
    for name, value in changes.items():
        if value is None:
            secrets.pop(name, None)
        else:
            secrets[name] = seal(settings, value)
    return {"config": dict(env.get("config") or {}), "secrets": secrets}


def secret_names(env: dict[str, Any]) -> list[str]:
    return sorted((env.get("secrets") or {}).keys())


def runtime_env(settings: Settings, env: dict[str, Any]) -> dict[str, Any]:
    """The `env` variable of expressions: config as stored, secrets opened. A secret sealed under
    another signing key (the key was rotated) opens as an empty string instead of failing every
    call; setting it again repairs it."""
    secrets = env.get("secrets") or {}
    if not secrets:
        return {"config": dict(env.get("config") or {}), "secrets": {}}
    fernet = _fernet(settings)
    opened: dict[str, str] = {}
    for name, token in secrets.items():
        try:
            opened[name] = fernet.decrypt(str(token).encode()).decode()
        except InvalidToken:
            opened[name] = ""
    return {"config": dict(env.get("config") or {}), "secrets": opened}
