"""The gateway's memory of end-user tokens it verified stays within its size however many
validly signed tokens (each of another end user) arrive, and refused ones take no place."""

import pytest

from apiforge.core.errors import AuthenticationError
from apiforge.engine.tokens import VerifiedTokens, sign_end_user_token
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
