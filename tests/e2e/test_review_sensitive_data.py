"""Sensitive data end to end: sensitive args, app secrets, encrypted fields and signed tokens stay
masked wherever a call shows or keeps them outside its answer — the callee of a `callApi`, a
debug trace, a `log` line, an error message, a stored idempotent answer (DESIGN.md §2:
sensitive fields are never returned in clear, and are masked in logs and traces)."""

import re
from collections.abc import MutableMapping
from typing import Any

import pytest
from fastapi import FastAPI
from httpx import AsyncClient, Response
from structlog.testing import capture_logs

from apiforge.idempotency.keys import record_id
from tests.e2e._apps import new_api, new_app
from tests.e2e._idempotency import stored_body
from tests.e2e._keys import app_key, call
from tests.e2e._workspaces import assert_error, data_of
from tests.factories import User, register

PIN = "pin-7f3a9c21"
PHONE = "+44 20 7946 0000"
CARD = "4111111111111111"
MAIL_KEY = "mk-live-5e1f0a7d"
JWT = re.compile(r"eyJ[\w-]+\.[\w-]+\.[\w-]+")
USERS = [
    {"name": "name", "type": "string"},
    {"name": "phone", "type": "string", "encrypted": True},
]
PRICE = 1000  # above any step's cost: these tests are about masking, not pricing


async def _dev(
    client: AsyncClient,
    user: User,
    app_id: str,
    api: str,
    args: dict[str, Any],
    *,
    debug: int = 0,
) -> Response:
    body = {"appId": app_id, "api": api, "version": "dev", "args": args, "debug": debug}
    return await client.post("/api/v1/invocations", json=body, headers=user.headers)


async def _users_app(client: AsyncClient, owner: User, **fields: Any) -> str:
    """An app with the guide's `users` collection (`phone` encrypted) and an `addUser` API."""
    app_id = await new_app(client, owner.headers, "Vault", **fields)
    body = {"appId": app_id, "name": "users", "fields": USERS}
    data_of(await client.post("/api/v1/datasets", json=body, headers=owner.headers))
    insert = {
        "id": "user",
        "type": "insert",
        "collection": "users",
        "data": {"name": {"expr": "args.name"}, "phone": {"expr": "args.phone"}},
    }
    params = [{"name": "name"}, {"name": "phone", "sensitive": True}]
    await new_api(
        client, owner.headers, app_id, "addUser", params=params, steps=[insert], price=PRICE
    )
    return app_id


def _api_logs(logs: list[MutableMapping[str, Any]]) -> list[str]:
    return [str(line["text"]) for line in logs if line.get("event") == "api_log"]


async def test_a_callers_sensitive_arg_stays_masked_in_its_callees_log_lines(
    client: AsyncClient,
) -> None:
    """The callee declares `code` as a plain param, but what the caller passes in it is the
    caller's sensitive PIN: the callee's `log` line masks it as the caller's own would."""
    owner = await register(client)
    app_id = await new_app(client, owner.headers, "Pins")
    note = {
        "id": "note",
        "type": "log",
        "level": "warning",
        "message": {"expr": "'code ' + args.code"},
    }
    await new_api(client, owner.headers, app_id, "check", params=[{"name": "code"}], steps=[note])
    forward = {
        "id": "check",
        "type": "callApi",
        "api": "check",
        "args": {"code": {"expr": "args.pin"}},
    }
    params = [{"name": "pin", "sensitive": True}]
    await new_api(
        client, owner.headers, app_id, "login", params=params, steps=[forward], price=PRICE
    )

    with capture_logs() as logs:
        data_of(await _dev(client, owner, app_id, "login", {"pin": PIN}))
    assert _api_logs(logs) == ["code ***"]


async def test_a_callees_encrypted_fields_and_signed_tokens_are_masked_in_the_callers_trace(
    client: AsyncClient,
) -> None:
    """The caller reads no collection and signs nothing itself; the trace entry of its
    `callApi` step shows what the callee answered, with the callee's encrypted `phone` and
    the token it signed masked, as the callee's own steps would show them."""
    owner = await register(client)
    app_id = await _users_app(client, owner)
    data_of(await _dev(client, owner, app_id, "addUser", {"name": "ann", "phone": PHONE}))
    find = {
        "id": "user",
        "type": "getOne",
        "collection": "users",
        "filter": {"name": {"_eq": "ann"}},
    }
    sign = {"id": "session", "type": "jwtSign", "sub": {"expr": "steps.user.id"}, "expiresIn": 600}
    await new_api(client, owner.headers, app_id, "signIn", steps=[find, sign], price=PRICE)
    outer = {"id": "inner", "type": "callApi", "api": "signIn"}
    await new_api(client, owner.headers, app_id, "outer", steps=[outer], price=PRICE)

    traced = data_of(await _dev(client, owner, app_id, "outer", {}, debug=1))
    answer = traced["result"]["inner"]
    assert answer["user"]["phone"] == PHONE  # the answer itself is the builder's to give
    token = answer["session"]["token"]
    [entry] = traced["trace"]
    assert entry["output"]["user"]["phone"] == "***"
    assert entry["output"]["session"]["token"] == "***"
    shown = str(traced["trace"])
    assert PHONE not in shown
    assert token not in shown


async def test_values_inside_a_sensitive_object_arg_are_masked_in_traces_and_logs(
    client: AsyncClient,
) -> None:
    """A sensitive `object` param is masked by its name, and so is every value inside it
    wherever a step copies one: `args.card.number` in a `set` output or a `log` message."""
    owner = await register(client)
    app_id = await new_app(client, owner.headers, "Cards")
    steps = [
        {"id": "last", "type": "set", "value": {"number": {"expr": "args.card.number"}}},
        {"id": "expiry", "type": "set", "value": {"expr": "args.card.dates[0]"}},
        {
            "id": "note",
            "type": "log",
            "level": "warning",
            "message": {"expr": "'charging ' + args.card.number"},
        },
    ]
    params = [{"name": "card", "type": "object", "sensitive": True}]
    await new_api(client, owner.headers, app_id, "charge", params=params, steps=steps, price=PRICE)
    card = {"number": CARD, "dates": ["2031-09"]}

    with capture_logs() as logs:
        traced = data_of(await _dev(client, owner, app_id, "charge", {"card": card}, debug=1))
    assert traced["result"]["last"] == {"number": CARD}
    outputs = {entry["stepId"]: entry["output"] for entry in traced["trace"]}
    assert outputs["last"] == {"number": "***"}
    assert outputs["expiry"] == "***"
    assert CARD not in str(traced["trace"])
    assert _api_logs(logs) == ["charging ***"]


async def test_a_signed_token_copied_by_a_later_step_is_masked_in_the_trace(
    client: AsyncClient,
) -> None:
    """The `jwtSign` entry is masked whole; a `set` that copies its token masks it too (the
    trace hides the value, not only the entry that made it)."""
    owner = await register(client)
    app_id = await new_app(client, owner.headers, "Tokens")
    steps = [
        {"id": "session", "type": "jwtSign", "sub": {"expr": "args.user"}, "expiresIn": 600},
        {"id": "header", "type": "set", "value": {"expr": "'Bearer ' + steps.session.token"}},
    ]
    await new_api(
        client, owner.headers, app_id, "signIn", params=[{"name": "user"}], steps=steps, price=PRICE
    )

    traced = data_of(await _dev(client, owner, app_id, "signIn", {"user": "ann"}, debug=1))
    token = traced["result"]["session"]["token"]
    assert traced["result"]["header"] == f"Bearer {token}"
    entries = {entry["stepId"]: entry for entry in traced["trace"]}
    assert entries["session"]["output"] == "***"
    assert entries["header"]["output"] == "Bearer ***"
    assert not JWT.search(str(traced["trace"]))


@pytest.mark.parametrize("expression", ["duration(env.secrets.mailKey)", "{'a': 1}[args.pin]"])
async def test_an_expression_error_never_quotes_an_app_secret_or_a_sensitive_arg(
    client: AsyncClient, expression: str
) -> None:
    """CEL's error quotes the value it could not use; the 400 reaches a consumer of the
    published API. Its message masks the app's secrets and sensitive args, as the trace does."""
    owner, consumer = await register(client), await register(client)
    app_id = await new_app(
        client, owner.headers, "Mail", visibility="public", secrets={"mailKey": MAIL_KEY}
    )
    steps = [{"id": "ttl", "type": "set", "value": {"expr": expression}}]
    params = [{"name": "pin", "sensitive": True}]
    await new_api(client, owner.headers, app_id, "send", params=params, steps=steps, price=PRICE)
    published = await client.post(
        f"/api/v1/apps/{app_id}/versions", json={"bump": "minor"}, headers=owner.headers
    )
    data_of(published)
    _key_id, key = await app_key(client, consumer, app_id)

    refused = await call(client, key, app_id, "send", {"pin": PIN})
    body = assert_error(refused, 400, "expression_error")
    assert body["stepId"] == "ttl"
    assert "***" in refused.json()["message"]
    assert MAIL_KEY not in refused.text
    assert PIN not in refused.text
    traced = await _dev(client, owner, app_id, "send", {"pin": PIN}, debug=1)
    assert_error(traced, 400, "expression_error")
    assert MAIL_KEY not in traced.text
    assert PIN not in traced.text


@pytest.mark.parametrize("expression", ["env", "env[args.part]"])
async def test_an_answer_that_may_read_env_beyond_its_config_is_stored_sealed(
    app: FastAPI, client: AsyncClient, expression: str
) -> None:
    """`env` whole (or indexed by an arg) holds the app's secrets though no step says
    `secrets`: such an answer is sealed while kept for replay, like one reading
    `env.secrets.<name>`; one reading only `env.config` is kept as it is."""
    owner, consumer = await register(client), await register(client)
    app_id = await new_app(
        client,
        owner.headers,
        "Env",
        visibility="public",
        config={"siteName": "Ada's blog"},
        secrets={"mailKey": MAIL_KEY},
    )
    params = [{"name": "part"}]
    env = [{"id": "env", "type": "set", "value": {"expr": expression}}]
    await new_api(client, owner.headers, app_id, "env", params=params, steps=env, price=PRICE)
    site = [{"id": "site", "type": "set", "value": {"expr": "env.config.siteName"}}]
    await new_api(client, owner.headers, app_id, "site", steps=site, price=PRICE)
    published = await client.post(
        f"/api/v1/apps/{app_id}/versions", json={"bump": "minor"}, headers=owner.headers
    )
    data_of(published)
    key_id, key = await app_key(client, consumer, app_id)
    scope = f"{consumer.workspace_id}|key:{key_id}"

    answered = await call(
        client, key, app_id, "env", {"part": "secrets"}, headers={"Idempotency-Key": "e-1"}
    )
    assert MAIL_KEY in answered.text  # the builder chose to answer it
    stored = await stored_body(app, record_id("key", scope, "e-1"))
    assert MAIL_KEY.encode() not in stored
    again = await call(
        client, key, app_id, "env", {"part": "secrets"}, headers={"Idempotency-Key": "e-1"}
    )
    assert again.headers.get("Idempotent-Replayed") == "1"
    assert again.content == answered.content

    plain = await call(client, key, app_id, "site", headers={"Idempotency-Key": "s-1"})
    assert data_of(plain) == {"site": "Ada's blog"}
    assert await stored_body(app, record_id("key", scope, "s-1")) == plain.content


async def test_two_secrets_overlapping_in_a_log_line_are_both_masked_whole(
    client: AsyncClient,
) -> None:
    """An app secret and a sensitive arg that overlap in a text (the secret's end is the
    arg's start): masking one and then looking for the other left the rest of the other in
    clear (`***-9931-ffee`)."""
    owner = await register(client)
    app_id = await new_app(client, owner.headers, "Overlap", secrets={"mailKey": MAIL_KEY})
    pin = MAIL_KEY[-4:] + "-9931-ffee"
    message = {"expr": "'key ' + env.secrets.mailKey + args.pin.substring(4) + ' sent'"}
    note = {"id": "note", "type": "log", "level": "warning", "message": message}
    params = [{"name": "pin", "sensitive": True}]
    await new_api(client, owner.headers, app_id, "send", params=params, steps=[note], price=PRICE)

    with capture_logs() as logs:
        data_of(await _dev(client, owner, app_id, "send", {"pin": pin}))
    assert _api_logs(logs) == ["key *** sent"]
