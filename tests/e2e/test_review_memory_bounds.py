"""What a client can make a server process remember by sending ever new values: signed calls'
nonces (capped, refusing rather than forgetting), metric series (route templates only, never a
raw path or an invented method), idempotency claims (none left once calls end, refused or not)."""

import uuid

import pytest
from fastapi import FastAPI
from httpx import AsyncClient

from apiforge.gateway.signing import NONCES_KEY, MemoryNonceStore
from apiforge.gateway.stages.idempotency import idempotency_store
from apiforge.http.metrics import REQUESTS
from tests.e2e._keys import app_key, call, notes_app
from tests.e2e._workspaces import assert_error, data_of
from tests.e2e.test_gateway_signing import _body, _send, signed_headers
from tests.factories import register


async def test_a_key_past_its_share_of_nonces_is_refused_and_replays_stay_refused(
    app: FastAPI, client: AsyncClient
) -> None:
    store = app.state.gateway_state.extra.get(NONCES_KEY)
    if not isinstance(store, MemoryNonceStore):
        pytest.skip("with Redis the nonces are kept there, not in the process")
    owner, consumer = await register(client), await register(client)
    app_id = await notes_app(client, owner, visibility="public")
    key_id, secret = await app_key(client, consumer, app_id)
    store.per_key = 20
    held = len(store)
    first = None
    # Calls to apps that do not exist: each is a 404, yet its nonce is claimed (the signature
    # is checked before the app is looked up), so only the cap stops them piling up.
    for n in range(30):
        body = _body(f"no-such-app-{n}", "echo", text="x")
        headers = signed_headers(key_id, secret, body)
        first = first or (body, headers)
        response = await _send(client, body, headers)
        if n < 20:
            assert response.status_code == 404, response.text
        else:
            assert_error(response, 429, "too_many_nonces")
            assert int(response.headers["Retry-After"]) >= 1
    assert len(store) == held + 20
    assert first is not None
    assert_error(await _send(client, *first), 401, "nonce_reused")  # never forgotten early
    other_id, other_secret = await app_key(client, owner, app_id)  # another key: unaffected
    body = _body(app_id, "echo", text="still signing")
    response = await _send(client, body, signed_headers(other_id, other_secret, body))
    assert data_of(response) == {"echo": "still signing"}


def _series() -> set[tuple[str, ...]]:
    return {
        tuple(sample.labels[name] for name in ("method", "route", "status"))
        for metric in REQUESTS.collect()
        for sample in metric.samples
        if sample.name.endswith("_total")
    }


async def test_random_paths_and_methods_mint_no_metric_series(client: AsyncClient) -> None:
    await client.get("/api/v1/no-such-thing")
    await client.request("FOO", "/api/v1/no-such-thing")
    before = _series()
    tokens = [uuid.uuid4().hex for _ in range(300)]
    for token in tokens:
        assert (await client.get(f"/api/v1/{token}?{token}=1")).status_code == 404
        assert (await client.get(f"/{token}/x")).status_code == 404
        await client.request(f"M{token[:8].upper()}", f"/api/v1/apps/{token}")
    minted = _series() - before
    # The one template of `/api/v1/apps/{appId}` may take a status or two; nothing per request.
    assert len(minted) <= 4, minted
    assert not any(token[:8] in value for token in tokens for s in minted for value in s)


async def test_keyed_calls_leave_no_claim_in_memory(app: FastAPI, client: AsyncClient) -> None:
    local = idempotency_store(app.state.gateway_state).local
    if local is None:
        pytest.skip("claims in process memory are the embedded database's")
    owner, consumer = await register(client), await register(client)
    app_id = await notes_app(client, owner, visibility="public")
    _, secret = await app_key(client, consumer, app_id)
    for n in range(100):
        key = {"Idempotency-Key": uuid.uuid4().hex}
        assert (
            await call(client, secret, app_id, "echo", {"text": f"t{n}"}, headers=key)
        ).is_success
        # Refused before the claim (401, 404) or by validation: nothing is claimed either.
        await call(client, "app-" + uuid.uuid4().hex, app_id, "echo", headers=key)
        await call(client, secret, app_id, "noSuchApi", headers=key)
        await call(client, secret, app_id, "echo", {"text": 5}, headers=key)
    assert local.inflight == {}
