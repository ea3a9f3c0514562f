"""Idempotency keys, sequence numbers and anti-duplicate tokens on the gateway.

A `hits` app inserts one record per execution, so the record count says how many times a call
really ran, whatever the responses claim.
"""

import asyncio

from fastapi import FastAPI
from httpx import AsyncClient, Response

from apiforge.gateway.stages.idempotency import idempotency_store
from apiforge.idempotency.keys import fingerprint, fingerprint_key, record_id
from tests.e2e._idempotency import hit, hits_app, total
from tests.e2e._keys import app_key, call, create_key, notes_app
from tests.e2e._workspaces import assert_error, data_of
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
        key = fingerprint_key(app.state.settings.signing_key)
        await store.claim(conn, rid, fingerprint(key, "POST", "/api/v1/invocations", "", body))
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


async def test_calls_refused_before_running_are_not_stored(client: AsyncClient) -> None:
    app_id, _, secret = await _setup(client)
    # Authentication: a wrong key never reaches the store.
    assert_error(
        await hit(client, "app-" + "x" * 40, app_id, 1, **{KEY: "k"}), 401, "invalid_api_key"
    )
    # Validation: the same key later carries a valid payload and runs (no 422, no replay).
    bad = await call(client, secret, app_id, "hit", {"n": "one"}, headers={KEY: "k"})
    assert bad.status_code == 400
    # A failing step rolls back and frees the key too.
    failed = await call(client, secret, app_id, "failing", {"n": 1}, headers={KEY: "k"})
    assert_error(failed, 409, "nope")
    good = await hit(client, secret, app_id, 1, **{KEY: "k"})
    assert good.status_code == 200
    assert not _replayed(good)
    assert await total(client, secret, app_id) == 1


async def test_a_key_is_scoped_to_the_caller(client: AsyncClient) -> None:
    owner = await register(client)
    app_id = await hits_app(client, owner)
    alice, bob = await register(client), await register(client)
    _, alice_secret = await app_key(client, alice, app_id)
    _, alice_other = await app_key(client, alice, app_id)
    _, bob_secret = await app_key(client, bob, app_id)
    first = await hit(client, alice_secret, app_id, 1, **{KEY: "shared"})
    for secret in (bob_secret, alice_other):
        response = await hit(client, secret, app_id, 1, **{KEY: "shared"})
        assert response.status_code == 200
        assert not _replayed(response)
        assert response.content != first.content
    assert await total(client, alice_secret, app_id) == 2  # alice's two keys, her partition
    assert await total(client, bob_secret, app_id) == 1


async def test_a_replay_needs_the_end_user_and_is_that_end_user_s(client: AsyncClient) -> None:
    """A browser (`pk-`) key is shared by the app's end users: a key's answer is replayed only
    to a call the gateway would let through (with a valid end-user token), and only to the end
    user who made the first call; sequence numbers likewise."""
    owner = await register(client)
    app_id = await notes_app(client, owner)
    _, secret = await app_key(client, owner, app_id)
    origin = "https://shop.example"
    _, pk = await create_key(
        client, owner.headers, type="pk", appId=app_id, allowedOrigins=[origin]
    )

    async def token_of(user: str) -> str:
        signed = data_of(await call(client, secret, app_id, "signIn", {"user": user}))
        return str(signed["session"]["token"])

    alice, bob = await token_of("alice"), await token_of("bob")
    for header, value in ((KEY, "k1"), ("X-Request-Seq", "7")):
        sent = {header: value, "Origin": origin}
        first = await call(
            client, pk, app_id, "whoAmI", headers={**sent, "Authorization": f"Bearer {alice}"}
        )
        assert data_of(first) == {"me": "alice"}
        assert_error(await call(client, pk, app_id, "whoAmI", headers=sent), 401, "token_required")
        forged = {**sent, "Authorization": "Bearer not.a.token"}
        assert (await call(client, pk, app_id, "whoAmI", headers=forged)).status_code == 401
        as_bob = await call(
            client, pk, app_id, "whoAmI", headers={**sent, "Authorization": f"Bearer {bob}"}
        )
        assert data_of(as_bob) == {"me": "bob"}
        assert not _replayed(as_bob)
        again = await call(
            client, pk, app_id, "whoAmI", headers={**sent, "Authorization": f"Bearer {alice}"}
        )
        assert _replayed(again)
        assert again.content == first.content


async def test_an_api_can_require_a_key(client: AsyncClient) -> None:
    app_id, _, secret = await _setup(client)
    missing = await call(client, secret, app_id, "strictHit", {"n": 1})
    data = assert_error(missing, 400, "idempotency_key_required")
    assert data["errors"] == [{"field": "Idempotency-Key", "message": "is required"}]
    assert await total(client, secret, app_id) == 0
    ok = await call(client, secret, app_id, "strictHit", {"n": 1}, headers={KEY: "s1"})
    assert ok.status_code == 200
    seq = await call(client, secret, app_id, "strictHit", {"n": 1}, headers={"X-Request-Seq": "9"})
    assert seq.status_code == 200
    assert await total(client, secret, app_id) == 2


async def test_a_seen_sequence_number_replays_the_first_result(client: AsyncClient) -> None:
    app_id, _, secret = await _setup(client)
    first = await hit(client, secret, app_id, 1, **{"X-Request-Seq": "1001"})
    again = await hit(client, secret, app_id, 1, **{"X-Request-Seq": "1001"})
    assert first.status_code == again.status_code == 200
    assert _replayed(again)
    assert again.content == first.content
    # Sequence numbers and idempotency keys are separate namespaces.
    keyed = await hit(client, secret, app_id, 1, **{KEY: "1001"})
    assert not _replayed(keyed)
    assert_error(
        await hit(client, secret, app_id, 2, **{"X-Request-Seq": "1001"}),
        422,
        "idempotency_key_mismatch",
    )
    for bad in ("", "x" * 65, "a b", "1/2"):
        response = await hit(client, secret, app_id, 1, **{"X-Request-Seq": bad})
        assert_error(response, 400, "invalid_request_seq")
    both = await hit(client, secret, app_id, 1, **{KEY: "k", "X-Request-Seq": "5"})
    assert_error(both, 400, "idempotency_headers_conflict")
    assert await total(client, secret, app_id) == 2


async def _token(client: AsyncClient, headers: dict[str, str]) -> str:
    response = await client.get("/api/v1/idempotency-tokens", headers=headers)
    data = data_of(response)
    assert data["header"] == "X-Idempotency-Token"
    assert data["expiresTime"].endswith("Z")
    token: str = data["token"]
    return token


async def test_an_anti_duplicate_token_is_spent_once(client: AsyncClient) -> None:
    app_id, consumer, _, secret = await _setup_with_consumer(client)
    token = await _token(client, {"X-Api-Key": secret})
    first = await hit(client, secret, app_id, 1, **{"X-Idempotency-Token": token})
    assert first.status_code == 200
    again = await hit(client, secret, app_id, 1, **{"X-Idempotency-Token": token})
    assert_error(again, 409, "duplicate_request")
    # Concurrent uses of one token: exactly one runs.
    token = await _token(client, {"X-Api-Key": secret})
    racing = await asyncio.gather(
        *(hit(client, secret, app_id, 1, **{"X-Idempotency-Token": token}) for _ in range(20))
    )
    assert sum(r.status_code == 200 for r in racing) == 1
    assert all(r.status_code in (200, 409, 429) for r in racing)
    # A token issued to someone else, or made up, is refused the same way.
    console_token = await _token(client, consumer.headers)
    foreign = await hit(client, secret, app_id, 1, **{"X-Idempotency-Token": console_token})
    assert_error(foreign, 409, "duplicate_request")
    for bogus in ("nope", "A" * 43, "x" * 200):
        made_up = await hit(client, secret, app_id, 1, **{"X-Idempotency-Token": bogus})
        assert_error(made_up, 409, "duplicate_request")
    assert await total(client, secret, app_id) == 2


async def test_a_token_with_a_key_replays_instead_of_refusing(client: AsyncClient) -> None:
    app_id, _, secret = await _setup(client)
    token = await _token(client, {"X-Api-Key": secret})
    headers = {"X-Idempotency-Token": token, KEY: "pay-1"}
    first = await hit(client, secret, app_id, 1, **headers)
    retry = await hit(client, secret, app_id, 1, **headers)
    assert first.status_code == retry.status_code == 200
    assert _replayed(retry)
    assert retry.content == first.content
    assert await total(client, secret, app_id) == 1


async def test_tokens_need_credentials(client: AsyncClient) -> None:
    assert_error(await client.get("/api/v1/idempotency-tokens"), 401, "unauthenticated")
    bad_key = await client.get(
        "/api/v1/idempotency-tokens", headers={"X-Api-Key": "app-" + "x" * 40}
    )
    assert_error(bad_key, 401, "invalid_api_key")


async def test_a_console_caller_on_dev_has_its_own_keys(client: AsyncClient) -> None:
    owner = await register(client)
    app_id = await hits_app(client, owner)
    body = {"appId": app_id, "api": "hit", "version": "dev", "args": {"n": 1}}
    headers = {**owner.headers, KEY: "dev-1"}
    first = await client.post("/api/v1/invocations", json=body, headers=headers)
    again = await client.post("/api/v1/invocations", json=body, headers=headers)
    assert first.status_code == again.status_code == 200
    assert _replayed(again)
    assert again.content == first.content
    counted = {"appId": app_id, "api": "total", "version": "dev", "args": {}}
    total_now = await client.post("/api/v1/invocations", json=counted, headers=owner.headers)
    assert data_of(total_now)["total"] == 1
