"""The revocation rule: a token is revoked when its `iat` is strictly before its user's latest
`jwtRevoke`, both to the millisecond (`iat` rounded down, the revocation up); tokens with a
whole-second `iat` (issued before milliseconds) compare alike. And `jwtRevoke`'s definition, and
the one `sub` rule `jwtSign` and `jwtRevoke` share (no NUL; other control characters taken)."""

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt
import pytest

from apiforge.engine.base import StepFailedError
from apiforge.engine.errors import DefinitionError
from apiforge.engine.tokens import (
    ceil_ms,
    floor_ms,
    from_ms,
    is_revoked,
    sign_end_user_token,
    verify_end_user_token,
)
from apiforge.tools.clock import utcnow

from ._steps_support import SIGNING_SECRET, compile_step, make_context

SECRET = "s" * 48
MOMENT = datetime(2026, 12, 8, 10, 0, 0, 123_456, tzinfo=UTC)
REVOKED = ceil_ms(MOMENT)  # ...0.124


def _claims(iat: float) -> dict[str, Any]:
    return {"iat": iat}


def test_rounding_keeps_every_earlier_token_before_the_revocation() -> None:
    assert floor_ms(MOMENT) == REVOKED - 1
    assert from_ms(REVOKED) == MOMENT.replace(microsecond=124_000)
    whole = MOMENT.replace(microsecond=124_000)  # on a millisecond: no rounding either way
    assert floor_ms(whole) == ceil_ms(whole) == REVOKED


@pytest.mark.parametrize(
    ("iat_ms", "revoked"),
    [
        (REVOKED - 1, True),  # the millisecond before
        (REVOKED, False),  # the same millisecond: signed by the call that revoked, after it
        (REVOKED + 1, False),  # after
    ],
)
def test_a_token_is_revoked_only_when_issued_strictly_before(iat_ms: int, revoked: bool) -> None:
    assert is_revoked(_claims(iat_ms / 1000), REVOKED) is revoked


def test_no_revocation_revokes_nothing() -> None:
    assert not is_revoked(_claims(0), None)


@pytest.mark.parametrize(
    ("revoked_ms", "revoked"),
    [(1_767_225_600_001, True), (1_767_225_600_000, False), (1_767_225_599_999, False)],
)
def test_whole_second_tokens_compare_alike(revoked_ms: int, revoked: bool) -> None:
    assert is_revoked(_claims(1_767_225_600), revoked_ms) is revoked


def test_a_token_issued_in_the_same_instant_as_a_revocation_is_revoked() -> None:
    """Signed, then revoked within the same millisecond: revoked (`iat` down, revocation up)."""
    token = sign_end_user_token(SECRET, "app", sub="u", now=MOMENT, expires_in=60)
    claims = jwt.decode(token, options={"verify_signature": False})
    assert is_revoked(claims, ceil_ms(MOMENT))


def test_iat_is_written_with_at_most_three_decimals_and_verifies() -> None:
    now = utcnow().replace(microsecond=987_654)
    token = sign_end_user_token(SECRET, "app", sub="u", now=now, expires_in=60)
    payload = json.loads(jwt.utils.base64url_decode(token.split(".")[1]))
    assert payload["iat"] == floor_ms(now) / 1000
    raw = jwt.utils.base64url_decode(token.split(".")[1]).decode()
    assert f'"iat":{floor_ms(now) // 1000}.987' in raw  # 3 decimals, no float noise
    claims = verify_end_user_token(SECRET, "app", token)  # PyJWT accepts a decimal `iat`
    assert round(claims["iat"] * 1000) == floor_ms(now)
    on_the_second = now.replace(microsecond=0)
    token = sign_end_user_token(SECRET, "app", sub="u", now=on_the_second, expires_in=60)
    assert jwt.decode(token, options={"verify_signature": False})["iat"] == int(
        on_the_second.timestamp()
    )


def test_a_given_issue_time_is_the_iat() -> None:
    token = sign_end_user_token(
        SECRET, "app", sub="u", now=MOMENT, expires_in=60, issued=REVOKED + 5
    )
    claims = jwt.decode(token, options={"verify_signature": False})
    assert round(claims["iat"] * 1000) == REVOKED + 5
    assert claims["exp"] == int((MOMENT + timedelta(seconds=60)).timestamp())


@pytest.mark.parametrize("sub", ["", "x" * 129, 7, None, ["u"]])
def test_a_literal_bad_sub_is_refused_on_save(sub: Any) -> None:
    with pytest.raises(DefinitionError) as caught:
        compile_step({"id": "out", "type": "jwtRevoke", "sub": sub})
    assert caught.value.field == "steps.out.sub"


def test_jwt_revoke_costs_its_price_and_takes_only_sub() -> None:
    step = compile_step({"id": "out", "type": "jwtRevoke", "sub": {"expr": "token.sub"}})
    assert step.cost({"jwtRevoke": 3}) == 3
    with pytest.raises(DefinitionError):
        compile_step({"id": "out", "type": "jwtRevoke", "sub": "u", "expiresIn": 5})


# --- one `sub` rule for both steps ------------------------------------------------------------

NUL_SUB = "ali\x00ce"


@pytest.mark.parametrize("step_type", ["jwtSign", "jwtRevoke"])
async def test_a_sub_holding_nul_fails_either_step_alike(step_type: str) -> None:
    """`jwtRevoke` cannot store a NUL (PostgreSQL refuses it): `jwtSign` must not sign a token
    for a user no revocation could ever reach."""
    step = compile_step({"id": "s", "type": step_type, "sub": {"expr": "args.user"}})
    with pytest.raises(StepFailedError) as caught:
        await step.run(make_context(args={"user": NUL_SUB}))
    assert caught.value.details == {"stepId": "s", "field": "sub"}
    assert str(caught.value) == "sub cannot contain the NUL character"


@pytest.mark.parametrize("step_type", ["jwtSign", "jwtRevoke"])
def test_a_literal_sub_holding_nul_is_refused_on_save(step_type: str) -> None:
    with pytest.raises(DefinitionError) as caught:
        compile_step({"id": "s", "type": step_type, "sub": NUL_SUB})
    assert caught.value.field == "steps.s.sub"


@pytest.mark.parametrize("sub", ["a\tb", "a\nb", "a\rb", "\x01", "a\x1fb", "a\x7fb", "a\u2028b"])
async def test_other_control_characters_are_signed_as_they_are(sub: str) -> None:
    """Both backends store them, so `jwtRevoke` takes them too (end to end in
    tests/e2e/test_token_revocation.py): the token names the user exactly."""
    step = compile_step({"id": "s", "type": "jwtSign", "sub": {"expr": "args.user"}})
    out = await step.run(make_context(args={"user": sub}))
    assert verify_end_user_token(SIGNING_SECRET, "app-1", out["token"])["sub"] == sub
