"""Management answers are stored sealed under the server secret (idempotency/middleware.py)."""

from types import SimpleNamespace

import pytest

from apiforge.idempotency.claims import AnswerLostError
from apiforge.idempotency.middleware import _opened, _sealed


def _state(secret: str) -> SimpleNamespace:
    return SimpleNamespace(settings=SimpleNamespace(signing_key=secret))


def test_a_sealed_answer_opens_under_its_secret_only() -> None:
    answer = b'{"code":200,"data":{"key":"ws-0123456789abcdef"}}'
    sealed = _sealed(_state("server-secret-one"), answer)
    assert b"ws-0123456789abcdef" not in sealed
    assert _opened(_state("server-secret-one"), sealed) == answer
    # Replaced server secret: the answer is lost (409), never garbage or a 500.
    with pytest.raises(AnswerLostError):
        _opened(_state("server-secret-two"), sealed)


def test_an_answer_stored_in_clear_by_an_earlier_version_is_replayed_as_it_is() -> None:
    answer = b'{"code":200,"message":"success","data":{"id":"x"}}'
    assert _opened(_state("server-secret-one"), answer) == answer
