"""Idempotency keys, sequence numbers and anti-duplicate tokens on the gateway.

A `hits` app inserts one record per execution, so the record count says how many times a call
really ran, whatever the responses claim.
"""

import asyncio

from fastapi import FastAPI
from httpx import AsyncClient, Response

from apiforge.gateway.stages.idempotency import idempotency_store
from apiforge.idempotency.keys import fingerprint, record_id
from tests.e2e._idempotency import hit, hits_app, total
from tests.e2e._keys import app_key, call
from tests.e2e._workspaces import assert_error
from tests.factories import User, register

KEY = "Idempotency-Key"


async def _setup(client: AsyncClient) -> tuple[str, str, str]:
    """(app id, consumer key id, consumer key secret)."""
    app_id, _, key_id, secret = await _setup_with_consumer(client)
    return app_id, key_id, secret


async def _setup_with_consumer(client: AsyncClient) -> tuple[str, User, str, str]:
    owner, consumer = await register(client), await register(client)
    app_id = await hits_app(client, owner)
    key_id, secret = await app_key(client, consumer, app_id)
    return app_id, consumer, key_id, secret


def _replayed(response: Response) -> bool:
    return bool(response.headers.get("Idempotent-Replayed") == "1")


async def test_a_hundred_concurrent_calls_with_one_key_run_once(client: AsyncClient) -> None:
    app_id, _, secret = await _setup(client)
    responses = await asyncio.gather(
        *(hit(client, secret, app_id, 7, **{KEY: "order-42"}) for _ in range(100))
    )
    # 429: shed by the plan's concurrency limit before the idempotency stage (never stored).
    statuses = {r.status_code for r in responses}
    assert statuses <= {200, 409, 429}, [r.text for r in responses if r.status_code >= 500]
    successes = [r for r in responses if r.status_code == 200]
    assert successes
    assert len({r.content for r in successes}) == 1  # byte-identical
    assert sum(not _replayed(r) for r in successes) == 1  # one ran, the others replayed
    for refused in (r for r in responses if r.status_code == 409):
        assert_error(refused, 409, "idempotency_key_in_use")
        assert refused.headers["Retry-After"] == "1"
    assert await total(client, secret, app_id) == 1
    later = await hit(client, secret, app_id, 7, **{KEY: "order-42"})
    assert later.status_code == 200
    assert _replayed(later)
    assert later.content == successes[0].content
    assert await total(client, secret, app_id) == 1


async def test_a_replay_is_the_first_response_with_the_replay_header(client: AsyncClient) -> None:
    app_id, _, secret = await _setup(client)
    first = await hit(client, secret, app_id, 1, **{KEY: "k1"})
    second = await hit(client, secret, app_id, 1, **{KEY: "k1"})
    assert first.status_code == second.status_code == 200
    assert "Idempotent-Replayed" not in first.headers
    assert second.headers["Idempotent-Replayed"] == "1"
    assert second.content == first.content
    assert second.headers["content-type"] == first.headers["content-type"]
    assert second.headers["x-request-id"] != first.headers["x-request-id"]
    assert await total(client, secret, app_id) == 1


async def test_bare_and_quoted_keys_are_the_same_key(client: AsyncClient) -> None:
    app_id, _, secret = await _setup(client)
    first = await hit(client, secret, app_id, 1, **{KEY: "abc-123"})
    quoted = await hit(client, secret, app_id, 1, **{KEY: '"abc-123"'})
    assert _replayed(quoted)
    assert quoted.content == first.content
    spaced = await hit(client, secret, app_id, 1, **{KEY: '"a key with spaces"'})
    assert spaced.status_code == 200
    assert await total(client, secret, app_id) == 2


async def test_malformed_keys_are_400_and_run_nothing(client: AsyncClient) -> None:
    app_id, _, secret = await _setup(client)
    assert (await hit(client, secret, app_id, 1, **{KEY: "k" * 255})).status_code == 200
    for bad in ("k" * 256, '"' + "k" * 256 + '"', '""', "a b", "tab\there", '"quo"te"'):
        response = await hit(client, secret, app_id, 1, **{KEY: bad})
        data = assert_error(response, 400, "invalid_idempotency_key")
        assert data["errors"][0]["field"] == "Idempotency-Key"
    empty = await hit(client, secret, app_id, 1, **{KEY: ""})
    assert_error(empty, 400, "invalid_idempotency_key")
    assert await total(client, secret, app_id) == 1


async def test_the_same_key_with_another_payload_is_422(client: AsyncClient) -> None:
    app_id, _, secret = await _setup(client)
    assert (await hit(client, secret, app_id, 1, **{KEY: "k"})).status_code == 200
    other = await hit(client, secret, app_id, 2, **{KEY: "k"})
    assert_error(other, 422, "idempotency_key_mismatch")
    other_api = await call(client, secret, app_id, "strictHit", {"n": 1}, headers={KEY: "k"})
    assert_error(other_api, 422, "idempotency_key_mismatch")
    assert await total(client, secret, app_id) == 1


async def test_a_duplicate_while_the_first_runs_is_409(app: FastAPI, client: AsyncClient) -> None:
    app_id, consumer, key_id, secret = await _setup_with_consumer(client)
    body = f'{{"appId":"{app_id}","api":"hit","version":"latest","args":{{"n":1}}}}'.encode()
    store = idempotency_store(app.state.gateway_state)
    async with app.state.engine.connect() as conn:
        rid = record_id("key", f"{consumer.workspace_id}|key:{key_id}", "busy")
        # Another process holds the claim: its request is still running.
        await store.claim(conn, rid, fingerprint("POST", "/api/v1/invocations", "", body))
    response = await client.post(
        "/api/v1/invocations",
        content=body,
        headers={"X-Api-Key": secret, KEY: "busy", "Content-Type": "application/json"},
    )
    assert_error(response, 409, "idempotency_key_in_use")
    changed = await client.post(
        "/api/v1/invocations",
        content=body.replace(b'"n":1', b'"n":2'),
        headers={"X-Api-Key": secret, KEY: "busy", "Content-Type": "application/json"},
    )
    assert_error(changed, 422, "idempotency_key_mismatch")
    assert await total(client, secret, app_id) == 0
