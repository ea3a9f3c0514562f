"""End-user tokens: what `jwtSign` issues verifies for its own app only, and nothing forged does."""

import base64
import json
import re
import time
from datetime import timedelta
from pathlib import Path

import jwt
import pytest

from apiforge.core.errors import AuthenticationError
from apiforge.engine import tokens as tokens_module
from apiforge.engine.tokens import (
    RESERVED_CLAIMS,
    VerifiedTokens,
    sign_end_user_token,
    verify_end_user_token,
)
from apiforge.tools.clock import CLOCK_SKEW_SECONDS, utcnow

SECRET = "app-secret-" + "s" * 40
OTHER_SECRET = "other-secret-" + "o" * 40


def _sign(**overrides: object) -> str:
    options: dict[str, object] = {"sub": "user-1", "now": utcnow(), "expires_in": 3600}
    options.update(overrides)
    return sign_end_user_token(SECRET, "app-a", **options)  # type: ignore[arg-type]


def _b64(value: dict[str, object]) -> str:
    return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()


def test_round_trip_carries_sub_rights_admin_and_custom_claims() -> None:
    token = _sign(rights=["post:write"], admin=True, claims={"orgId": "o1", "plan": "pro"})
    claims = verify_end_user_token(SECRET, "app-a", token)
    assert claims["sub"] == "user-1"
    assert claims["aud"] == "app-a"
    assert claims["rights"] == ["post:write"]
    assert claims["admin"] is True
    assert claims["orgId"] == "o1"
    assert claims["plan"] == "pro"
    assert claims["exp"] - int(claims["iat"]) == 3600  # `iat` to the millisecond


def test_non_admin_token_has_no_admin_claim_and_empty_rights() -> None:
    claims = verify_end_user_token(SECRET, "app-a", _sign())
    assert "admin" not in claims
    assert claims["rights"] == []


def test_expired_token_is_refused_as_expired() -> None:
    token = _sign(now=utcnow() - timedelta(hours=2), expires_in=60)
    with pytest.raises(AuthenticationError) as caught:
        verify_end_user_token(SECRET, "app-a", token)
    assert caught.value.reason == "token_expired"
    assert caught.value.status == 401


def test_tampered_signature_is_refused() -> None:
    header, payload, signature = _sign().split(".")
    flipped = ("A" if signature[0] != "A" else "B") + signature[1:]
    with pytest.raises(AuthenticationError) as caught:
        verify_end_user_token(SECRET, "app-a", f"{header}.{payload}.{flipped}")
    assert caught.value.reason == "invalid_token"


def test_tampered_payload_is_refused() -> None:
    header, _, signature = _sign(rights=["read"]).split(".")
    claims = verify_end_user_token(SECRET, "app-a", _sign(rights=["read"]))
    forged = _b64({**claims, "admin": True, "rights": ["*"]})
    with pytest.raises(AuthenticationError):
        verify_end_user_token(SECRET, "app-a", f"{header}.{forged}.{signature}")


def test_alg_none_token_is_refused() -> None:
    now = int(utcnow().timestamp())
    payload = {"iss": "apiforge", "aud": "app-a", "sub": "u", "iat": now, "exp": now + 60}
    unsigned = f"{_b64({'alg': 'none', 'typ': 'JWT'})}.{_b64(payload)}."
    with pytest.raises(AuthenticationError) as caught:
        verify_end_user_token(SECRET, "app-a", unsigned)
    assert caught.value.reason == "invalid_token"


def test_another_apps_token_is_refused_even_with_the_same_secret() -> None:
    token = sign_end_user_token(SECRET, "app-b", sub="user-1", now=utcnow(), expires_in=60)
    with pytest.raises(AuthenticationError):
        verify_end_user_token(SECRET, "app-a", token)


def test_token_signed_with_another_secret_is_refused() -> None:
    token = sign_end_user_token(OTHER_SECRET, "app-a", sub="user-1", now=utcnow(), expires_in=60)
    with pytest.raises(AuthenticationError):
        verify_end_user_token(SECRET, "app-a", token)


def test_token_without_expiry_is_refused() -> None:
    token = jwt.encode({"iss": "apiforge", "aud": "app-a", "sub": "u", "iat": 1}, SECRET)
    with pytest.raises(AuthenticationError):
        verify_end_user_token(SECRET, "app-a", token)


def test_console_token_shape_is_refused() -> None:
    now = utcnow()
    token = jwt.encode(
        {"iss": "apiforge", "aud": "apiforge-console", "sub": "u", "iat": now, "exp": now}, SECRET
    )
    with pytest.raises(AuthenticationError):
        verify_end_user_token(SECRET, "app-a", token)


@pytest.mark.parametrize("claim", ["aud", "sub", "exp", "iss", "admin", "rights"])
def test_custom_claims_cannot_override_platform_claims(claim: str) -> None:
    with pytest.raises(ValueError, match=claim):
        _sign(claims={claim: "x"})


def test_the_builder_guide_names_every_claim_jwt_sign_reserves() -> None:
    """The guide listed `iss … admin` but not `ws`, so a builder's `claims: {"ws": …}` was
    refused (400) for a reason the guide did not give."""
    guide = Path(__file__).resolve().parents[3] / "docs" / "builder.md"
    lines = guide.read_text(encoding="utf-8").splitlines()
    (row,) = [line for line in lines if line.startswith("| `claims` |")]
    listed = re.search(r"may not set `([^`]*)`", row)
    assert listed is not None
    assert set(listed.group(1).split()) == RESERVED_CLAIMS


@pytest.mark.parametrize("garbage", ["", "abc", "a.b.c", "a.b", "Bearer x.y.z"])
def test_garbage_is_refused(garbage: str) -> None:
    with pytest.raises(AuthenticationError):
        verify_end_user_token(SECRET, "app-a", garbage)


def test_verified_tokens_remember_accepted_tokens_only(monkeypatch: pytest.MonkeyPatch) -> None:
    verifier = VerifiedTokens(size=2)
    token = _sign(rights=["r"])
    first = verifier.verify(SECRET, "app-a", token)
    first["rights"].append("tampered")  # a caller's copy; the memory is unchanged
    checks: list[str] = []

    def counted(*_args: object) -> dict[str, object]:
        checks.append("checked")
        return {"exp": 2**40}

    monkeypatch.setattr(tokens_module, "verify_end_user_token", counted)
    again = verifier.verify(SECRET, "app-a", token)
    assert checks == []  # remembered: no signature check
    assert again["rights"] == ["r"]
    # Another app, another secret, or a different token: verified (here: by the patched check).
    verifier.verify(SECRET, "app-b", token)
    verifier.verify(OTHER_SECRET, "app-a", token)
    assert checks == ["checked", "checked"]


def test_verified_tokens_refuse_forgeries_and_expire_remembered_tokens(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    verifier = VerifiedTokens()
    token = _sign(expires_in=60)
    forged = token[:-2] + ("AA" if not token.endswith("AA") else "BB")
    for _ in range(2):  # a refusal is never remembered
        with pytest.raises(AuthenticationError) as exc:
            verifier.verify(SECRET, "app-a", forged)
        assert exc.value.reason == "invalid_token"
    verifier.verify(SECRET, "app-a", token)
    later = time.time() + 61
    monkeypatch.setattr("apiforge.engine.tokens.time.time", lambda: later)
    with pytest.raises(AuthenticationError) as exc:
        verifier.verify(SECRET, "app-a", token)
    assert exc.value.reason == "token_expired"


def test_a_token_from_a_node_a_little_ahead_verifies_one_far_ahead_does_not() -> None:
    """Nodes' clocks differ a little: a token another node issued a few seconds "in the future"
    is valid at once; an `iat` beyond the allowed skew (or not a number) is refused."""
    ahead = _sign(now=utcnow() + timedelta(seconds=20))
    assert verify_end_user_token(SECRET, "app-a", ahead)["sub"] == "user-1"
    far = _sign(now=utcnow() + timedelta(seconds=CLOCK_SKEW_SECONDS + 30))
    with pytest.raises(AuthenticationError) as caught:
        verify_end_user_token(SECRET, "app-a", far)
    assert caught.value.reason == "invalid_token"
    now = int(time.time())
    for iat in ("soon", True, None):
        forged = jwt.encode(
            {"iss": tokens_module.ISSUER, "aud": "app-a", "sub": "u", "iat": iat, "exp": now + 60},
            SECRET,
            algorithm="HS256",
        )
        with pytest.raises(AuthenticationError):
            verify_end_user_token(SECRET, "app-a", forged)
