"""How long a token revocation is kept (`engine/revocations.PRUNE_AFTER`): every token a row
refuses has expired, on every node whose clock is within `CLOCK_SKEW_SECONDS`, before the row may
be pruned — so a prune never lets a revoked token in again."""

from datetime import UTC, datetime, timedelta

import jwt
from hypothesis import given
from hypothesis import strategies as st

from apiforge.engine.revocations import PRUNE_AFTER
from apiforge.engine.tokens import (
    MAX_EXPIRES_IN,
    ceil_ms,
    floor_ms,
    from_ms,
    is_revoked,
    sign_end_user_token,
)
from apiforge.tools.clock import CLOCK_SKEW_SECONDS

SECRET = "s" * 48
MOMENT = datetime(2026, 12, 8, 10, 0, 0, 123_456, tzinfo=UTC)


def _expired_when_pruned(token: str, revoked_ms: int) -> bool:
    """Whether the token has expired, on a node `CLOCK_SKEW_SECONDS` behind the pruning one, at
    the earliest moment the pruning node deletes the revocation (`revoked_at < now - PRUNE_AFTER`:
    a hair after `revoked_at + PRUNE_AFTER`). The gateway refuses a token at its `exp` (PyJWT:
    `exp <= now`, no leeway)."""
    claims = jwt.decode(token, options={"verify_signature": False})
    assert is_revoked(claims, revoked_ms)
    behind = from_ms(revoked_ms) + PRUNE_AFTER - timedelta(seconds=CLOCK_SKEW_SECONDS)
    return bool(claims["exp"] <= behind.timestamp())


def test_the_longest_token_a_revocation_refuses_is_expired_before_its_row_goes() -> None:
    revoked = ceil_ms(MOMENT)
    # The last token it refuses: signed a microsecond before it, for the longest lifetime.
    signed = from_ms(revoked) - timedelta(microseconds=1)
    token = sign_end_user_token(SECRET, "app", sub="u", now=signed, expires_in=MAX_EXPIRES_IN)
    assert _expired_when_pruned(token, revoked)
    assert PRUNE_AFTER.total_seconds() == MAX_EXPIRES_IN + CLOCK_SKEW_SECONDS


@given(
    now=st.datetimes(
        min_value=datetime(2001, 1, 1), max_value=datetime(2090, 1, 1), timezones=st.just(UTC)
    ),
    expires_in=st.integers(min_value=1, max_value=MAX_EXPIRES_IN),
    # `jwtSign` issues at the call's start, or at a revocation of its user earlier in the call;
    # versions before milliseconds at the call's start's whole second ("legacy").
    later_ms=st.none() | st.just("legacy") | st.integers(min_value=0, max_value=10_000),
    after_ms=st.integers(min_value=1, max_value=10**6),
)
def test_any_token_a_revocation_refuses_is_expired_before_its_row_goes(
    now: datetime, expires_in: int, later_ms: int | str | None, after_ms: int
) -> None:
    if isinstance(later_ms, str):
        issued: int | None = floor_ms(now) // 1000 * 1000
    else:
        issued = None if later_ms is None else floor_ms(now) + later_ms
    token = sign_end_user_token(
        SECRET, "app", sub="u", now=now, expires_in=expires_in, issued=issued
    )
    iat_ms = round(jwt.decode(token, options={"verify_signature": False})["iat"] * 1000)
    assert _expired_when_pruned(token, iat_ms + after_ms)  # any revocation that refuses it
