"""Console access tokens verify on every node: one whose clock is a little behind the issuer's
accepts its tokens at once; a token "issued" far in the future is refused."""

from datetime import timedelta

import pytest

from apiforge.accounts import tokens
from apiforge.core.errors import AuthenticationError
from apiforge.core.settings import Settings
from apiforge.tools.clock import CLOCK_SKEW_SECONDS, utcnow


def _issued_ahead(settings: Settings, monkeypatch: pytest.MonkeyPatch, seconds: int) -> str:
    ahead = utcnow() + timedelta(seconds=seconds)
    with monkeypatch.context() as patched:
        patched.setattr(tokens, "utcnow", lambda: ahead)
        return tokens.issue_access_token(settings, "acct-1", "sess-1")


def test_a_token_from_a_node_a_little_ahead_is_accepted(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    token = _issued_ahead(settings, monkeypatch, 5)
    assert tokens.decode_access_token(settings, token)["sid"] == "sess-1"


def test_a_token_issued_beyond_the_skew_is_refused(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    token = _issued_ahead(settings, monkeypatch, CLOCK_SKEW_SECONDS + 30)
    with pytest.raises(AuthenticationError) as caught:
        tokens.decode_access_token(settings, token)
    assert caught.value.reason == "invalid_token"
