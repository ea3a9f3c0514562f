"""Review of each app's generated OpenAPI document against the gateway: the credentials it offers,
the body fields it allows and the statuses it lists must be what the gateway really takes and
answers, checked with real calls."""

import socket
from typing import Any

import fastjsonschema
from httpx import AsyncClient

from apiforge.core.settings import Settings
from tests.e2e._apps import new_api, new_app
from tests.e2e._keys import create_key, subscribe
from tests.e2e._workspaces import assert_error, data_of
from tests.e2e.test_review_openapi_docs import _matches, _media, _openapi, _spec_errors
from tests.factories import app_client, register

ORIGIN = "https://shop.example.com"
ECHO = [{"id": "out", "type": "set", "value": {"expr": "args"}}]


async def _publish(client: AsyncClient, headers: dict[str, str], app_id: str) -> None:
    response = await client.post(
        f"/api/v1/apps/{app_id}/versions", json={"bump": "major"}, headers=headers
    )
    data_of(response)


async def test_the_dev_document_takes_the_debug_flag_the_gateway_takes(
    client: AsyncClient,
) -> None:
    """`debug` is a documented body field of `dev` calls (the README's first call sends it); the
    body schema allowed no field but appId, api, version and args, so a client checking its
    requests against the document could not ask for a trace."""
    user = await register(client)
    app_id = await new_app(client, user.headers, "Traced")
    await new_api(client, user.headers, app_id, "echo", steps=ECHO)
    dev = await _openapi(client, user.headers, app_id, "dev")
    assert _spec_errors(dev) == []
    body = {"appId": app_id, "api": "echo", "version": "dev", "args": {}, "debug": 1}
    fastjsonschema.compile(_media(dev, "echo")["schema"])(body)
    traced = await client.post("/api/v1/invocations", json=body, headers=user.headers)
    assert set(data_of(traced)) == {"result", "trace"}
    _matches(dev, "/api/v1/invocations#echo", "post", traced)

    # A published version refuses a trace: its document offers none.
    await _publish(client, user.headers, app_id)
    latest = await _openapi(client, user.headers, app_id, "latest")
    assert "debug" not in _media(latest, "echo")["schema"]["properties"]
    refused = await client.post(
        "/api/v1/invocations", json={**body, "version": "latest"}, headers=user.headers
    )
    assert_error(refused, 400, "debug_dev_only")


def _offers_publishable_key(document: dict[str, Any], api: str) -> bool:
    operation = document["paths"][f"/api/v1/invocations#{api}"]["post"]
    return any("publishableKey" in requirement for requirement in operation["security"])


async def test_a_publishable_key_is_offered_only_where_the_gateway_takes_one(
    client: AsyncClient,
) -> None:
    """The document offered every API to a `pk-` key, which the gateway refuses (403
    `publishable_key_not_allowed`) for an API that is neither public nor token-bound."""
    owner, consumer = await register(client), await register(client)
    app_id = await new_app(client, owner.headers, "Shop", visibility="public")
    await new_api(client, owner.headers, app_id, "open", steps=ECHO, auth={"public": True})
    await new_api(client, owner.headers, app_id, "plain", steps=ECHO)
    await _publish(client, owner.headers, app_id)
    await subscribe(client, consumer.headers, app_id)
    _, pk = await create_key(
        client, consumer.headers, type="pk", appId=app_id, allowedOrigins=[ORIGIN]
    )
    document = await _openapi(client, consumer.headers, app_id, "latest")
    assert _spec_errors(document) == []
    schemes = document["components"]["securitySchemes"]
    assert "pk-" not in schemes["apiKey"]["description"]
    for api in ("open", "plain"):
        called = await client.post(
            "/api/v1/invocations",
            json={"appId": app_id, "api": api, "args": {}},
            headers={"X-Api-Key": pk, "Origin": ORIGIN},
        )
        if _offers_publishable_key(document, api):
            assert called.status_code == 200, called.text
        else:
            assert_error(called, 403, "publishable_key_not_allowed")
        _matches(document, f"/api/v1/invocations#{api}", "post", called)
    assert _offers_publishable_key(document, "open")


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


async def test_every_status_the_gateway_answers_has_an_entry(settings: Settings) -> None:
    """A `throw` step answers the status its builder chose, an `httpRequest` step 502 when its
    upstream fails: neither was in the app document's responses (no entry, no `4XX`/`5XX`), nor
    the 502 in the platform document's gateway path."""
    allowed = settings.model_copy(update={"http_allow_hosts": ["127.0.0.1"]})
    async with app_client(allowed) as (_, client):
        user = await register(client)
        app_id = await new_app(client, user.headers, "Failing")
        refuse = [{"id": "no", "type": "throw", "status": 418, "error": "teapot"}]
        await new_api(client, user.headers, app_id, "refuse", steps=refuse)
        url = f"http://127.0.0.1:{_closed_port()}/"
        fetch = [{"id": "get", "type": "httpRequest", "url": url}]
        await new_api(client, user.headers, app_id, "fetch", steps=fetch, price=1000)
        document = await _openapi(client, user.headers, app_id, "dev")
        assert _spec_errors(document) == []
        platform = (await client.get("/openapi.json")).json()
        for api, status, reason in (("refuse", 418, "teapot"), ("fetch", 502, "upstream_error")):
            body = {"appId": app_id, "api": api, "version": "dev", "args": {}}
            called = await client.post("/api/v1/invocations", json=body, headers=user.headers)
            assert_error(called, status, reason)
            _matches(document, f"/api/v1/invocations#{api}", "post", called)
            _matches(platform, "/api/v1/invocations", "post", called)
