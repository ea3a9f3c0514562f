"""Review of API params over HTTP: an `integer` default that no call could pass (beyond 64 bits)
is refused when the API is saved, and an `integer` bound beyond 2^53 bounds exactly (it was kept
as a float, so `max: 9007199254740993` refused 9007199254740993 itself). Types are strict: no
bool passes as a number, no string as an integer or boolean."""

from typing import Any

import pytest
from httpx import AsyncClient

from tests.e2e._apps import new_app
from tests.e2e._workspaces import assert_error, data_of
from tests.factories import User, register

URL = "/api/v1/invocations"
ECHO = [{"id": "echo", "type": "set", "value": {"expr": "args"}}]


async def _save(client: AsyncClient, user: User, app_id: str, params: Any) -> Any:
    body = {"api": "echo", "params": params, "steps": ECHO}
    return await client.post(f"/api/v1/apps/{app_id}/apis", json=body, headers=user.headers)


async def _echo_app(client: AsyncClient, params: list[dict[str, Any]]) -> tuple[User, str]:
    user = await register(client)
    app_id = await new_app(client, user.headers)
    data_of(await _save(client, user, app_id, params))
    return user, app_id


async def _call(client: AsyncClient, user: User, app_id: str, args: Any) -> Any:
    body = {"appId": app_id, "version": "dev", "api": "echo", "args": args}
    return await client.post(URL, json=body, headers=user.headers)


@pytest.mark.parametrize("default", [1e19, -1e19, 9.3e18])
async def test_an_integer_default_beyond_64_bits_is_refused_on_save(
    client: AsyncClient, default: Any
) -> None:
    """It was saved, then every call without the arg failed with 400 `invalid_arguments`."""
    user = await register(client)
    app_id = await new_app(client, user.headers)
    params = [{"name": "n", "type": "integer", "default": default}]
    response = await _save(client, user, app_id, params)
    data = assert_error(response, 400, "invalid_definition")
    assert data["errors"][0]["field"] == "params.0.default", data


async def test_an_integral_float_default_is_served_as_an_integer(client: AsyncClient) -> None:
    user, app_id = await _echo_app(client, [{"name": "n", "type": "integer", "default": 5.0}])
    assert data_of(await _call(client, user, app_id, {}))["echo"] == {"n": 5}


@pytest.mark.parametrize("bound", [9007199254740993, -9007199254740993])
async def test_an_integer_bound_beyond_2_53_is_exact(client: AsyncClient, bound: int) -> None:
    attr = "max" if bound > 0 else "min"
    user, app_id = await _echo_app(client, [{"name": "n", "type": "integer", attr: bound}])
    ok = await _call(client, user, app_id, {"n": bound})
    assert data_of(ok)["echo"] == {"n": bound}
    beyond = bound + 1 if bound > 0 else bound - 1
    data = assert_error(await _call(client, user, app_id, {"n": beyond}), 400, "invalid_arguments")
    assert data["errors"][0]["field"] == "n"


@pytest.mark.parametrize(
    ("type_", "value"),
    [
        ("integer", True),
        ("integer", "1"),
        ("integer", 1.5),
        ("number", False),
        ("number", "1.5"),
        ("boolean", 2),
        ("boolean", 1.0),
        ("boolean", "true"),
        ("string", 1),
        ("array", {"0": 1}),
        ("object", [1]),
    ],
)
async def test_types_are_strict(client: AsyncClient, type_: str, value: Any) -> None:
    user, app_id = await _echo_app(client, [{"name": "v", "type": type_}])
    data = assert_error(await _call(client, user, app_id, {"v": value}), 400, "invalid_arguments")
    assert data["errors"] == [{"field": "v", "message": f"must be {type_}"}]


@pytest.mark.parametrize(
    ("param", "value"),
    [
        ({"type": "object", "enum": [{"a": 1}]}, {"a": True}),
        ({"type": "array", "enum": [[0]]}, [False]),
        ({"type": "integer", "enum": [1, 2]}, True),
    ],
)
async def test_enum_compares_as_json_not_as_python(
    client: AsyncClient, param: dict[str, Any], value: Any
) -> None:
    """Python has `True == 1`; JSON Schema's enum does not."""
    user, app_id = await _echo_app(client, [{"name": "v", **param}])
    data = assert_error(await _call(client, user, app_id, {"v": value}), 400, "invalid_arguments")
    assert data["errors"][0]["field"] == "v"


async def test_bounds_are_inclusive_and_lengths_count_code_points(client: AsyncClient) -> None:
    params = [
        {"name": "s", "type": "string", "min": 1, "max": 2},
        {"name": "n", "type": "number", "min": 0.5, "max": 1.5},
        {"name": "a", "type": "array", "max": 1},
    ]
    user, app_id = await _echo_app(client, params)
    for args in [{"s": "😀😀"}, {"s": "é"}, {"n": 0.5}, {"n": 1.5}, {"a": [[1, 2]]}]:
        assert data_of(await _call(client, user, app_id, args))["echo"] == args
    for args, field in [
        ({"s": "😀😀😀"}, "s"),
        ({"s": ""}, "s"),
        ({"n": 1.5000001}, "n"),
        ({"a": [1, 2]}, "a"),
    ]:
        response = await _call(client, user, app_id, args)
        assert assert_error(response, 400, "invalid_arguments")["errors"][0]["field"] == field


async def test_missing_params_come_first_then_unknown_ones_are_named(client: AsyncClient) -> None:
    params = [{"name": "a", "required": True}, {"name": "b", "required": True}]
    user, app_id = await _echo_app(client, params)
    response = await _call(client, user, app_id, {"c": 1})
    data = assert_error(response, 400, "missing_parameters")
    assert response.json()["message"] == "Missing required parameters"
    assert [e["field"] for e in data["errors"]] == ["a", "b"]
    response = await _call(client, user, app_id, {"a": "x", "b": "y", "zz": 1, "c": 2})
    data = assert_error(response, 400, "invalid_arguments")
    assert data["errors"] == [{"field": "c", "message": "unknown parameter"}]


async def test_a_boolean_arg_takes_1_and_0_as_every_platform_input_does(
    client: AsyncClient,
) -> None:
    """DESIGN.md: inputs accept true/false/1/0 (record fields already did); steps see booleans."""
    params: list[dict[str, Any]] = [
        {"name": "on", "type": "boolean"},
        {"name": "only", "type": "boolean", "enum": [True]},
    ]
    user, app_id = await _echo_app(client, params)
    accepted: list[tuple[dict[str, Any], dict[str, bool]]] = [
        ({"on": 1, "only": 1}, {"on": True, "only": True}),
        ({"on": 0}, {"on": False}),
        ({"on": True}, {"on": True}),
    ]
    for sent, seen in accepted:
        echoed = data_of(await _call(client, user, app_id, sent))["echo"]
        assert echoed == seen
        assert all(type(value) is bool for value in echoed.values())
    refused: list[dict[str, Any]] = [
        {"only": 0},
        {"on": 2},
        {"on": -1},
        {"on": 1.0},
        {"on": "1"},
        {"on": "true"},
    ]
    for args in refused:
        data = assert_error(await _call(client, user, app_id, args), 400, "invalid_arguments")
        assert data["errors"][0]["field"] in args
