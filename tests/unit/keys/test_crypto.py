"""Key material: secrets, prefixes, the lookup hash and the sealed copy."""

import hashlib

import pytest

from apiforge.keys.crypto import (
    SECRET_LENGTH,
    SecretSealer,
    kind_of,
    looks_like_key,
    new_secret,
    sealer_for,
    secret_hash,
    visible_prefix,
)


@pytest.mark.parametrize("kind", ["app", "pk", "ws"])
def test_a_new_secret_is_its_kind_then_forty_base62_characters(kind: str) -> None:
    secret = new_secret(kind)
    prefix, _, body = secret.partition("-")
    assert prefix == kind
    assert len(body) == SECRET_LENGTH
    assert body.isalnum()
    assert body.isascii()
    assert looks_like_key(secret)
    assert kind_of(secret) == kind


def test_secrets_do_not_repeat() -> None:
    assert len({new_secret("app") for _ in range(200)}) == 200


def test_an_unknown_kind_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown key kind"):
        new_secret("sk")


@pytest.mark.parametrize(
    "text",
    [
        "",
        "app-",
        "app-short",
        "sk-" + "a" * SECRET_LENGTH,
        "app-" + "a" * (SECRET_LENGTH + 1),
        "app-" + "a" * (SECRET_LENGTH - 1) + "_",
        "app-" + "a" * (SECRET_LENGTH - 1) + "é",
        "'; DROP TABLE accounts; --",
        "eyJhbGciOiJIUzI1NiJ9.e30.x",
    ],
)
def test_garbage_never_looks_like_a_key(text: str) -> None:
    assert not looks_like_key(text)


def test_the_visible_prefix_shows_the_kind_and_eight_characters() -> None:
    secret = new_secret("pk")
    assert visible_prefix(secret) == secret[:11]
    assert visible_prefix(secret).startswith("pk-")


def test_the_lookup_hash_is_sha256_hex() -> None:
    assert secret_hash("app-x") == hashlib.sha256(b"app-x").hexdigest()


def test_sealing_round_trips_and_hides_the_secret() -> None:
    sealer = SecretSealer("server-secret")
    secret = new_secret("app")
    sealed = sealer.seal(secret)
    assert secret not in sealed
    assert len(sealed) <= 255  # the column's size
    assert sealer.open(sealed) == secret
    assert sealer.seal(secret) != sealed  # a fresh IV every time


def test_a_secret_sealed_under_another_server_secret_does_not_open() -> None:
    sealed = SecretSealer("old-secret").seal(new_secret("app"))
    assert SecretSealer("new-secret").open(sealed) is None
    assert SecretSealer("new-secret").open("not a token") is None
    assert SecretSealer("new-secret").open("é") is None


def test_the_sealer_never_shows_its_key() -> None:
    assert repr(SecretSealer("server-secret")) == "SecretSealer(<key hidden>)"
    assert sealer_for("s") is sealer_for("s")
