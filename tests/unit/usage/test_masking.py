"""Which args a request log keeps: sensitive params masked, nothing else touched."""

from apiforge.usage.masking import MASK, mask_args


def test_sensitive_params_are_masked_and_the_rest_kept() -> None:
    args = {"title": "Hi", "password": "hunter2", "pin": 1234, "tags": ["a"]}
    assert mask_args(args, frozenset({"password", "pin"})) == {
        "title": "Hi",
        "password": MASK,
        "pin": MASK,
        "tags": ["a"],
    }
    assert MASK == "***"
    assert args["password"] == "hunter2"  # the call's own args are untouched


def test_absent_or_null_sensitive_params_show_as_sent() -> None:
    assert mask_args({"password": None}, frozenset({"password", "token"})) == {"password": None}


def test_the_result_is_a_copy_even_without_sensitive_params() -> None:
    args = {"title": "Hi"}
    masked = mask_args(args, frozenset())
    assert masked == args
    assert masked is not args
