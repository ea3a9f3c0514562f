"""A publish names each API whose price (what callers of `latest` pay from then on) or cost
(what the builder pays the platform) changed, with the old and the new amount."""

from typing import Any

from apiforge.builder.versions import compare


def _api(**extra: Any) -> dict[str, Any]:
    return {"params": [], "steps": [], "auth": {}, "price": 5, "cost": 2, **extra}


def _read(latest: dict[str, Any], dev: dict[str, Any]) -> list[dict[str, Any]]:
    return [change.read().model_dump(by_alias=True) for change in compare(latest, dev)]


def test_a_new_price_is_named_with_both_amounts() -> None:
    assert _read({"a": _api(), "b": _api()}, {"a": _api(price=8), "b": _api()}) == [
        {
            "api": "a",
            "kind": "price_changed",
            "param": "",
            "breaking": False,
            "message": "price of API a changed from 5 to 8 RU",
            "before": 5,
            "after": 8,
        }
    ]


def test_a_new_cost_is_named_as_well_and_a_steps_change_still_shows() -> None:
    steps = [{"id": "x", "type": "set", "value": 1}]
    changes = _read({"a": _api()}, {"a": _api(cost=3, price=0, steps=steps)})
    assert [(c["kind"], c["before"], c["after"]) for c in changes] == [
        ("price_changed", 5, 0),
        ("cost_changed", 2, 3),
        ("api_changed", None, None),
    ]
    assert changes[1]["message"] == "cost of API a changed from 2 to 3 RU"


def test_a_missing_amount_counts_as_zero_and_the_same_amount_is_no_change() -> None:
    assert _read({"a": {**_api(), "cost": None}}, {"a": _api(cost=0)}) == []
    assert _read({"a": _api()}, {"a": _api()}) == []
