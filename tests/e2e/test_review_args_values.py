"""Review of how a call's args become values in the engine, over HTTP.

A `number` arg is a CEL double however the client's JSON encoder wrote it (`1` or `1.0`), and a
whole one still names the same user-rights target, token subject or masked secret; an `integer`
arg stays a CEL int. An undeclared arg is refused even when it is `null` (a declared one that is
`null` is "not given"), while a workflow's args pass through as given, nulls included. A param
named like a CEL keyword (`in`) is read as `args['in']`, and `args.in` is refused on save with a
message that says so.
"""

from typing import Any

import pytest
from httpx import AsyncClient, Response

from tests.e2e._apps import new_api, new_app
from tests.e2e._keys import PRICE
from tests.e2e._perms import consumer, grant
from tests.e2e._workspaces import assert_error, data_of
from tests.factories import User, register

URL = "/api/v1/invocations"


def _sets(**exprs: str) -> list[dict[str, Any]]:
    return [{"id": key, "type": "set", "value": {"expr": expr}} for key, expr in exprs.items()]


async def _app(
    client: AsyncClient, params: list[dict[str, Any]], steps: list[dict[str, Any]]
) -> tuple[User, str]:
    user = await register(client)
    app_id = await new_app(client, user.headers)
    await new_api(client, user.headers, app_id, "probe", params=params, steps=steps)
    return user, app_id


async def _call(client: AsyncClient, user: User, app_id: str, args: Any, **extra: Any) -> Any:
    body = {"appId": app_id, "version": "dev", "api": "probe", "args": args, **extra}
    return await client.post(URL, json=body, headers=user.headers)


async def _call_raw(client: AsyncClient, user: User, app_id: str, args: bytes) -> Response:
    """A call whose args are sent as written (numbers JSON encoders would not write)."""
    start = f'{{"appId": "{app_id}", "version": "dev", "api": "probe", "args": '.encode()
    headers = {**user.headers, "Content-Type": "application/json"}
    return await client.post(URL, content=start + args + b"}", headers=headers)


# --- number args are doubles ----------------------------------------------------------------

NUMBER_EXPRS = {
    "half": "args.x / 2.0",
    "plus": "args.x + 0.5",
    "same": "args.x == 1.0",
    "kind": "type(args.x) == double",
}


@pytest.mark.parametrize("sent", [b"1", b"1.0", b"1e0"])
async def test_a_number_arg_is_a_double_however_it_is_written(
    client: AsyncClient, sent: bytes
) -> None:
    """`1` stayed a CEL int: `args.x + 0.5` failed (400 expression_error) and `args.x / 2`
    divided as integers, for the same number that worked when a client sent `1.0`."""
    user, app_id = await _app(client, [{"name": "x", "type": "number"}], _sets(**NUMBER_EXPRS))
    response = await _call_raw(client, user, app_id, b'{"x": ' + sent + b"}")
    assert data_of(response) == {"half": 0.5, "plus": 1.5, "same": True, "kind": True}


async def test_cel_type_names_are_not_unknown_variables(client: AsyncClient) -> None:
    """`type(args.x) == double` was refused on save: "unknown name double"."""
    steps = _sets(kind="type(args.x) == double ? 'double' : (type(args.x) == int ? 'int' : '?')")
    user, app_id = await _app(client, [{"name": "x", "type": "number"}], steps)
    assert data_of(await _call(client, user, app_id, {"x": 2.5})) == {"kind": "double"}


async def test_a_number_default_is_a_double_too(client: AsyncClient) -> None:
    params = [{"name": "x", "type": "number", "default": 1, "enum": [1, 2]}]
    user, app_id = await _app(client, params, _sets(**NUMBER_EXPRS))
    expected = {"half": 0.5, "plus": 1.5, "same": True, "kind": True}
    assert data_of(await _call(client, user, app_id, {})) == expected
    assert data_of(await _call(client, user, app_id, {"x": None})) == expected


@pytest.mark.parametrize("sent", [b"3", b"3.0"])
async def test_an_integer_arg_stays_an_int(client: AsyncClient, sent: bytes) -> None:
    steps = _sets(half="args.n / 2", kind="type(args.n) == int", item="[10, 20, 30, 40][args.n]")
    user, app_id = await _app(client, [{"name": "n", "type": "integer"}], steps)
    response = await _call_raw(client, user, app_id, b'{"n": ' + sent + b"}")
    assert data_of(response) == {"half": 1, "kind": True, "item": 40}


async def test_a_number_arg_beyond_the_double_range_is_400_naming_it(client: AsyncClient) -> None:
    """A 400-digit integer literal passed the checks (`1e400` was refused) and failed in the
    first expression that read it."""
    user, app_id = await _app(client, [{"name": "x", "type": "number"}], _sets(echo="args"))
    response = await _call_raw(client, user, app_id, b'{"x": 1' + b"0" * 400 + b"}")
    data = assert_error(response, 400, "invalid_arguments")
    assert data["errors"] == [{"field": "x", "message": "must be a finite number"}]
    huge = 2**64 + 1  # beyond 64 bits, still a double
    assert data_of(await _call(client, user, app_id, {"x": huge})) == {"echo": {"x": float(huge)}}


async def test_a_whole_number_arg_names_the_same_user_rights_target(client: AsyncClient) -> None:
    """`userSystem` took `7` as the target "7" but refused `7.0` as a missing target (403)."""
    owner = await register(client)
    app_id = await new_app(client, owner.headers, "Orgs", visibility="public")
    sign_in = {
        "id": "session",
        "type": "jwtSign",
        "sub": {"expr": "args.user"},
        "expiresIn": {"expr": "args.ttl"},
    }
    auth = {"requireToken": False, "mode": "none", "rights": []}
    user_param = [
        {"name": "user", "type": "number", "required": True},
        {"name": "ttl", "type": "number", "default": 600},
    ]
    await new_api(
        client,
        owner.headers,
        app_id,
        "signIn",
        params=user_param,
        steps=[sign_in],
        auth=auth,
        price=PRICE,
    )
    org_auth = {
        "requireToken": True,
        "mode": "userSystem",
        "rights": ["read"],
        "target": {"source": "arg", "value": "orgId"},
    }
    await new_api(
        client,
        owner.headers,
        app_id,
        "orgRead",
        params=[{"name": "orgId", "type": "number", "required": True}],
        steps=_sets(org="args.orgId"),
        auth=org_auth,
        price=PRICE,
    )
    published = await client.post(
        f"/api/v1/apps/{app_id}/versions", json={"bump": "minor"}, headers=owner.headers
    )
    data_of(published)
    user = await consumer(client, app_id)
    data_of(await grant(client, user.user.headers, app_id, "42", "7", ["read"]))
    # A whole `number` arg signs `sub` "42", as the integer 42 did.
    session = data_of(await user.call("signIn", user=42.0))["session"]
    assert session["expiresIn"] == 600
    token = session["token"]
    for org in (7, 7.0):
        assert data_of(await user.call("orgRead", token, orgId=org)) == {"org": 7.0}
    assert_error(await user.call("orgRead", token, orgId=8), 403, "insufficient_rights")


@pytest.mark.parametrize("sent", [b"4111111111111111", b"4111111111111111.0"])
async def test_a_sensitive_number_stays_masked_when_written_as_text(
    client: AsyncClient, sent: bytes
) -> None:
    """CEL writes the double 4111111111111111.0 as "4111111111111111", which the trace's masking
    (looking for "4111111111111111.0") let through."""
    params = [{"name": "card", "type": "number", "sensitive": True}]
    user, app_id = await _app(client, params, _sets(note="'card ' + string(args.card)"))
    start = f'{{"appId": "{app_id}", "version": "dev", "api": "probe", "debug": 1, '.encode()
    body = start + b'"args": {"card": ' + sent + b"}}"
    headers = {**user.headers, "Content-Type": "application/json"}
    response = await client.post(URL, content=body, headers=headers)
    data = data_of(response)
    assert data["trace"][0]["output"] == "card ***"
    assert "4111111111111111" not in response.text.split('"trace"')[1]


# --- undeclared and null args ---------------------------------------------------------------


@pytest.mark.parametrize("value", [None, 1])
async def test_an_undeclared_arg_is_refused_even_when_null(client: AsyncClient, value: Any) -> None:
    """`{"typo": null}` was dropped silently while `{"typo": 1}` was refused."""
    params = [{"name": "pageSize", "type": "integer", "default": 20}]
    user, app_id = await _app(client, params, _sets(echo="args"))
    response = await _call(client, user, app_id, {"pageSize": None, "pagesize": value})
    data = assert_error(response, 400, "invalid_arguments")
    assert data["errors"] == [{"field": "pagesize", "message": "unknown parameter"}]
    # A declared one that is null is "not given": its default applies.
    assert data_of(await _call(client, user, app_id, {"pageSize": None})) == {
        "echo": {"pageSize": 20}
    }


async def test_missing_required_params_still_come_before_an_undeclared_null(
    client: AsyncClient,
) -> None:
    user, app_id = await _app(client, [{"name": "a", "required": True}], _sets(echo="args"))
    response = await _call(client, user, app_id, {"a": None, "b": None})
    data = assert_error(response, 400, "missing_parameters")
    assert [error["field"] for error in data["errors"]] == ["a"]


async def test_workflow_args_pass_through_with_their_nulls(client: AsyncClient) -> None:
    """Documented as "passed through unchecked", yet `null` args were dropped."""
    user = await register(client)
    app_id = await new_app(client, user.headers)
    steps = _sets(echo="args", given="has(args.x) && args.x == null", n="args.n / 2")
    body = {"appId": app_id, "steps": steps, "args": {"x": None, "n": 3}}
    response = await client.post("/api/v1/workflows", json=body, headers=user.headers)
    assert data_of(response) == {"echo": {"x": None, "n": 3}, "given": True, "n": 1}


# --- params named like CEL keywords ---------------------------------------------------------


@pytest.mark.parametrize("keyword", ["in", "null", "true", "false"])
async def test_a_keyword_param_read_with_a_dot_is_a_clear_save_time_400(
    client: AsyncClient, keyword: str
) -> None:
    user = await register(client)
    app_id = await new_app(client, user.headers)
    body = {
        "api": "probe",
        "params": [{"name": keyword}],
        "steps": _sets(value=f"has(args.{keyword}) ? args.{keyword} : ''"),
    }
    response = await client.post(f"/api/v1/apps/{app_id}/apis", json=body, headers=user.headers)
    data = assert_error(response, 400, "invalid_definition")
    (error,) = data["errors"]
    assert error["field"] == "steps.value.value"
    assert "CEL keyword" in error["message"]
    assert f"args['{keyword}']" in error["message"]
    assert f"'{keyword}' in args" in error["message"]


async def test_a_keyword_param_is_read_by_index(client: AsyncClient) -> None:
    params = [{"name": "in", "type": "string", "enum": ["query", "header"]}]
    steps = _sets(where="'in' in args ? args['in'] : 'query'")
    user, app_id = await _app(client, params, steps)
    assert data_of(await _call(client, user, app_id, {"in": "header"})) == {"where": "header"}
    assert data_of(await _call(client, user, app_id, {})) == {"where": "query"}
