"""`PublishableKeyStage` and `key_caller`: what a publishable key may reach at the gateway."""

from typing import Any

import pytest

from apiforge.core.errors import ApiforgeError
from apiforge.engine.compiler import compile_api
from apiforge.gateway.context import Caller, GatewayContext
from apiforge.gateway.keys import EXPOSED_HEADERS, PublishableKeyStage, key_caller
from apiforge.keys.policy import KeyRecord


def _ctx(kind: str, auth: dict[str, Any], headers: dict[str, str] | None = None) -> GatewayContext:
    ctx = GatewayContext(
        headers=headers or {}, client_ip="203.0.113.5", request_id="r", raw_body=b""
    )
    ctx.caller = Caller(kind=kind, workspace_id="w")
    definition = {
        "api": "a",
        "params": [],
        "steps": [{"id": "s", "type": "set", "value": 1}],
        "returnSteps": None,
        "auth": auth,
        "price": 0,
        "enabled": True,
    }
    ctx.compiled = compile_api(definition, {}, {})
    return ctx


@pytest.mark.parametrize(
    "auth",
    [
        {"requireToken": True, "mode": "none"},
        {"requireToken": True, "mode": "simple", "rights": ["r"]},
        {"requireToken": False, "mode": "none", "public": True},
    ],
)
async def test_publishable_keys_reach_token_and_public_apis(auth: dict[str, Any]) -> None:
    ctx = _ctx("publishable_key", auth)
    await PublishableKeyStage().on_request(ctx)


async def test_publishable_keys_are_refused_elsewhere() -> None:
    ctx = _ctx("publishable_key", {"requireToken": False, "mode": "none"})
    with pytest.raises(ApiforgeError) as caught:
        await PublishableKeyStage().on_request(ctx)
    assert (caught.value.status, caught.value.reason) == (403, "publishable_key_not_allowed")


@pytest.mark.parametrize("kind", ["app_key", "workspace_key", "console", "signature"])
async def test_other_callers_pass_untouched(kind: str) -> None:
    await PublishableKeyStage().on_request(_ctx(kind, {"requireToken": False, "mode": "none"}))


def _record(kind: str, **extra: Any) -> KeyRecord:
    fields: dict[str, Any] = {
        "id": "k",
        "kind": kind,
        "workspace_id": "w",
        "app_id": None if kind == "ws" else "a",
        "subscription_id": None if kind == "ws" else "s",
        "role": "editor" if kind == "ws" else None,
        "account_id": "u",
        "expires_at": None,
        "revoked": False,
        "allowed_ips": (),
        "allowed_origins": frozenset(),
    }
    return KeyRecord(**{**fields, **extra})


def test_key_caller_maps_each_kind() -> None:
    ctx = _ctx("x", {})
    app = key_caller(_record("app"), ctx)
    assert (app.kind, app.workspace_id, app.app_id, app.key_id, app.account_id) == (
        "app_key",
        "w",
        "a",
        "k",
        None,
    )
    ws = key_caller(_record("ws"), ctx)
    assert (ws.kind, ws.role, ws.account_id, ws.app_id) == ("workspace_key", "editor", "u", None)
    assert ctx.response_headers == {}


def test_a_publishable_key_answers_its_origin_only() -> None:
    record = _record("pk", allowed_origins=frozenset({"https://app.example.com"}))
    ctx = _ctx("x", {}, {"origin": "https://app.example.com"})
    caller = key_caller(record, ctx)
    assert caller.kind == "publishable_key"
    assert caller.allowed_origins == ("https://app.example.com",)
    assert ctx.response_headers == {
        "Access-Control-Allow-Origin": "https://app.example.com",
        "Access-Control-Expose-Headers": EXPOSED_HEADERS,
        "Vary": "Origin",
    }
    exposed = EXPOSED_HEADERS.split(", ")
    assert {"Idempotent-Replayed", "X-Request-ID", "Retry-After", "RateLimit"} <= set(exposed)
    refused = _ctx("x", {}, {"origin": "https://evil.example.com"})
    with pytest.raises(ApiforgeError):
        key_caller(record, refused)
    assert refused.response_headers == {}
