"""The gateway's memory of end-user tokens it verified stays within its size, in tokens and in
bytes, however many validly signed tokens (each of another end user) arrive, and refused ones
take no place."""

import pytest

from apiforge.core.errors import AuthenticationError
from apiforge.engine.steps.auth import MAX_CLAIMS_BYTES
from apiforge.engine.tokens import VerifiedTokens, sign_end_user_token
from apiforge.rights.schemas import MAX_RIGHTS
from apiforge.tools.clock import utcnow

SECRET = "app-secret-" + "s" * 40
TOKENS = 20_000


def test_distinct_valid_tokens_stay_within_the_size() -> None:
    verified = VerifiedTokens(size=1_000)
    now = utcnow()
    for n in range(TOKENS):
        token = sign_end_user_token(SECRET, "app-a", sub=f"user-{n}", now=now, expires_in=3600)
        assert verified.verify(SECRET, "app-a", token)["sub"] == f"user-{n}"
        assert len(verified._accepted) <= 1_000


def test_refused_tokens_take_no_place() -> None:
    verified = VerifiedTokens(size=1_000)
    for n in range(TOKENS // 4):
        with pytest.raises(AuthenticationError):
            verified.verify(SECRET, "app-a", f"not.a.token{n}")
    assert len(verified._accepted) == 0


def test_the_largest_tokens_stay_within_the_bytes_cap() -> None:
    """A `jwtSign` token may carry 8 KB of claims and 100 rights of 128 characters (~30 KB,
    its claims ~22 KB more): by count alone the memory held ~400 MB of them."""
    verified = VerifiedTokens()
    now, rights = utcnow(), [f"{n:03d}" + "r" * 125 for n in range(MAX_RIGHTS)]
    claims = {"profile": "p" * (MAX_CLAIMS_BYTES - 20)}
    token = ""
    for n in range(1_000):  # ~50 MB of tokens and claims
        token = sign_end_user_token(
            SECRET,
            "app-a",
            sub=f"user-{n}",
            now=now,
            expires_in=3600,
            rights=rights,
            claims=claims,
        )
        verified.verify(SECRET, "app-a", token)
    held = sum(len(key[2]) + len(entry[1]) for key, entry in verified._accepted.items())
    assert held <= 32 * 1024 * 1024  # `MAX_CACHED_TOKEN_BYTES`
    assert held == verified.bytes
    assert ("app-a", SECRET, token) in verified._accepted  # the newest stays
