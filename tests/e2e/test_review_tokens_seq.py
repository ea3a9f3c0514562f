"""Review: anti-duplicate tokens and request sequence numbers (issue #6 items 5 and 6).

A token is the credential's that fetched it (the key, or the account), whatever end user a
browser key's call carries; it is spent once, also by 50 concurrent requests; a request refused
before the token is looked at leaves it unspent. A sequence number is the credential's in every
workspace: sent again to act in another workspace it is another request (422), not a replay.
On the management API the scope's workspace is the one the route acts in (a `/workspaces/{id}`
path's), and a workspace the caller is no member of switches neither keys nor tokens off.
"""

import asyncio
from typing import Any

from fastapi import FastAPI
from httpx import AsyncClient, Response

from apiforge.core.settings import Settings
from apiforge.gateway.stages.idempotency import idempotency_store
from tests.e2e._idempotency import hit, hits_app, total
from tests.e2e._keys import app_key, call, create_key, notes_app
from tests.e2e._workspaces import assert_error, data_of, new_workspace, team
from tests.factories import User, app_client, register

TOKEN = "X-Idempotency-Token"
SEQ = "X-Request-Seq"
TOKENS = "/api/v1/idempotency-tokens"


async def _token(client: AsyncClient, headers: dict[str, str]) -> str:
    token: str = data_of(await client.get(TOKENS, headers=headers))["token"]
    return token


async def _create(client: AsyncClient, headers: dict[str, Any], name: str = "Shop") -> Response:
    return await client.post("/api/v1/apps", json={"name": name}, headers=headers)


async def _apps(client: AsyncClient, headers: dict[str, str]) -> int:
    count: int = data_of(await client.get("/api/v1/apps", headers=headers))["totalCount"]
    return count


def _replayed(response: Response) -> bool:
    return bool(response.headers.get("Idempotent-Replayed") == "1")


async def _hits(client: AsyncClient) -> tuple[str, User, str]:
    """(hits app id, consumer, consumer's app- key secret)."""
    owner, consumer = await register(client), await register(client)
    app_id = await hits_app(client, owner)
    _, secret = await app_key(client, consumer, app_id)
    return app_id, consumer, secret


async def test_a_browser_key_s_token_works_on_a_call_with_an_end_user_token(
    client: AsyncClient,
) -> None:
    """The token endpoint binds a token to the `pk-` key (it sees no end user); the gateway
    looked for it under the key narrowed to the call's end user, so every such call was 409
    `duplicate_request` — anti-duplicate tokens were unusable from a browser."""
    owner = await register(client)
    app_id = await notes_app(client, owner)
    _, secret = await app_key(client, owner, app_id)
    origin = "https://shop.example"
    _, pk = await create_key(
        client, owner.headers, type="pk", appId=app_id, allowedOrigins=[origin]
    )
    signed = data_of(await call(client, secret, app_id, "signIn", {"user": "alice"}))
    bearer = f"Bearer {signed['session']['token']}"
    token = await _token(client, {"X-Api-Key": pk, "Origin": origin})
    sent = {"Origin": origin, "Authorization": bearer, TOKEN: token}
    first = await call(client, pk, app_id, "whoAmI", headers=sent)
    assert data_of(first) == {"me": "alice"}
    assert_error(await call(client, pk, app_id, "whoAmI", headers=sent), 409, "duplicate_request")
    # An app- key's token on a call carrying an end-user token: the same.
    token = await _token(client, {"X-Api-Key": secret})
    with_user = {"Authorization": bearer, TOKEN: token}
    assert data_of(await call(client, secret, app_id, "whoAmI", headers=with_user))
    again = await call(client, secret, app_id, "whoAmI", headers=with_user)
    assert_error(again, 409, "duplicate_request")


async def test_a_token_is_only_its_credential_s(client: AsyncClient) -> None:
    """Another key of the same workspace, another tenant's key, a `pk-` key of another app, the
    key's own creator signed in: each gets `duplicate_request`, and the token stays spendable by
    its owner. A revoked key gets no new token."""
    app_id, consumer, secret = await _hits(client)
    _, second = await app_key(client, consumer, app_id)
    _, stranger_secret = await app_key(client, await register(client), app_id)
    other_app = await notes_app(client, consumer)
    _, notes_secret = await app_key(client, consumer, other_app)
    signed = data_of(await call(client, notes_secret, other_app, "signIn", {"user": "eve"}))
    origin = "https://other.example"
    _, pk = await create_key(
        client, consumer.headers, type="pk", appId=other_app, allowedOrigins=[origin]
    )
    token = await _token(client, {"X-Api-Key": secret})
    for thief in (second, stranger_secret):
        stolen = await hit(client, thief, app_id, 1, **{TOKEN: token})
        assert_error(stolen, 409, "duplicate_request")
    as_eve = {"Origin": origin, "Authorization": f"Bearer {signed['session']['token']}"}
    by_pk = await call(client, pk, other_app, "whoAmI", headers={**as_eve, TOKEN: token})
    assert_error(by_pk, 409, "duplicate_request")
    as_account = await _create(client, {**consumer.headers, TOKEN: token})
    assert_error(as_account, 409, "duplicate_request")
    assert (await hit(client, secret, app_id, 1, **{TOKEN: token})).status_code == 200
    assert await total(client, secret, app_id) == 1
    assert await total(client, stranger_secret, app_id) == 0
    assert await _apps(client, consumer.headers) == 1  # the notes app only

    key_id, doomed = await app_key(client, consumer, app_id)
    early = await _token(client, {"X-Api-Key": doomed})
    revoked = await client.delete(f"/api/v1/api-keys/{key_id}", headers=consumer.headers)
    assert revoked.is_success
    assert (await client.get(TOKENS, headers={"X-Api-Key": doomed})).status_code == 401
    refused = await hit(client, doomed, app_id, 1, **{TOKEN: early})
    assert refused.status_code == 401
    assert_error(await hit(client, secret, app_id, 1, **{TOKEN: early}), 409, "duplicate_request")


async def test_an_account_s_token_is_its_own_in_every_workspace_and_on_both_edges(
    client: AsyncClient,
) -> None:
    owner = await register(client)
    app_id = await hits_app(client, owner)
    team = await new_workspace(client, owner)
    token = await _token(client, owner.headers)
    in_team = await _create(client, {**owner.headers, "X-Workspace-Id": team, TOKEN: token})
    assert in_team.status_code == 200, in_team.text
    body = {"appId": app_id, "api": "hit", "version": "dev", "args": {"n": 1}}
    spent = await client.post(
        "/api/v1/invocations", json=body, headers={**owner.headers, TOKEN: token}
    )
    assert_error(spent, 409, "duplicate_request")
    fresh = await _token(client, owner.headers)
    ran = await client.post(
        "/api/v1/invocations", json=body, headers={**owner.headers, TOKEN: fresh}
    )
    assert ran.status_code == 200, ran.text
    _, ws_key = await create_key(client, owner.headers, type="ws", role="editor")
    by_key = await _create(
        client, {"X-Api-Key": ws_key, TOKEN: await _token(client, owner.headers)}
    )
    assert_error(by_key, 409, "duplicate_request")


async def test_an_expired_token_is_refused_and_runs_nothing(
    app: FastAPI, client: AsyncClient
) -> None:
    app_id, consumer, secret = await _hits(client)
    idempotency_store(app.state.gateway_state).tokens.ttl = 1
    on_gateway = await _token(client, {"X-Api-Key": secret})
    on_management = await _token(client, consumer.headers)
    await asyncio.sleep(1.5)
    assert_error(
        await hit(client, secret, app_id, 1, **{TOKEN: on_gateway}), 409, "duplicate_request"
    )
    late = await _create(client, {**consumer.headers, TOKEN: on_management})
    assert_error(late, 409, "duplicate_request")
    assert await total(client, secret, app_id) == 0
    assert await _apps(client, consumer.headers) == 0


async def test_fifty_concurrent_requests_with_one_token_run_once(client: AsyncClient) -> None:
    app_id, consumer, secret = await _hits(client)
    token = await _token(client, {"X-Api-Key": secret})
    racing = await asyncio.gather(
        *(hit(client, secret, app_id, 1, **{TOKEN: token}) for _ in range(50))
    )
    assert sum(r.status_code == 200 for r in racing) == 1
    for refused in (r for r in racing if r.status_code != 200):
        assert refused.status_code in (409, 429), refused.text
        if refused.status_code == 409:
            assert_error(refused, 409, "duplicate_request")
    assert await total(client, secret, app_id) == 1

    token = await _token(client, consumer.headers)
    headers = {**consumer.headers, TOKEN: token}
    created = await asyncio.gather(*(_create(client, headers) for _ in range(50)))
    assert sorted(r.status_code for r in created) == [200] + [409] * 49
    assert await _apps(client, consumer.headers) == 1


async def test_a_request_refused_before_the_token_is_looked_at_leaves_it_unspent(
    client: AsyncClient,
) -> None:
    """Gateway: bad credentials, invalid args, a malformed or conflicting key header; management:
    bad credentials, a malformed key header. The token then still lets the corrected request
    run once. (A management route's own refusal spends it: docs/idempotency.md.)"""
    app_id, consumer, secret = await _hits(client)
    token = await _token(client, {"X-Api-Key": secret})
    refusals = (
        (await hit(client, "app-" + "x" * 40, app_id, 1, **{TOKEN: token}), 401),
        (await call(client, secret, app_id, "hit", {"n": "one"}, headers={TOKEN: token}), 400),
        (await hit(client, secret, app_id, 1, **{TOKEN: token, "Idempotency-Key": ""}), 400),
        (
            await hit(
                client, secret, app_id, 1, **{TOKEN: token, "Idempotency-Key": "k", SEQ: "1"}
            ),
            400,
        ),
    )
    for response, status in refusals:
        assert response.status_code == status, response.text
    assert (await hit(client, secret, app_id, 1, **{TOKEN: token})).status_code == 200
    assert await total(client, secret, app_id) == 1

    token = await _token(client, consumer.headers)
    assert_error(await _create(client, {TOKEN: token}), 401, "unauthenticated")
    malformed = await _create(client, {**consumer.headers, SEQ: "a b", TOKEN: token})
    assert_error(malformed, 400, "invalid_request_seq")
    assert (await _create(client, {**consumer.headers, TOKEN: token})).status_code == 200
    assert await _apps(client, consumer.headers) == 1


async def test_a_token_with_a_sequence_number_replays_and_a_mismatch_keeps_it(
    client: AsyncClient,
) -> None:
    app_id, _, secret = await _hits(client)
    token = await _token(client, {"X-Api-Key": secret})
    first = await hit(client, secret, app_id, 1, **{SEQ: "5", TOKEN: token})
    retry = await hit(client, secret, app_id, 1, **{SEQ: "5", TOKEN: token})
    assert first.status_code == 200
    assert _replayed(retry)
    assert retry.content == first.content
    other = await _token(client, {"X-Api-Key": secret})
    mismatch = await hit(client, secret, app_id, 2, **{SEQ: "5", TOKEN: other})
    assert_error(mismatch, 422, "idempotency_key_mismatch")
    assert (await hit(client, secret, app_id, 2, **{SEQ: "6", TOKEN: other})).status_code == 200
    assert await total(client, secret, app_id) == 2


async def test_sequence_numbers_are_strings_of_the_documented_alphabet(
    client: AsyncClient,
) -> None:
    """Negative, beyond 64 bits, leading zeros: each its own number (`007` is not `7`); spaces
    and tabs around are dropped; anything else (signs, commas, non-ASCII digits, inner spaces,
    65 characters) is 400 and runs nothing."""
    app_id, _, secret = await _hits(client)
    accepted = ("-5", "1" * 64, "18446744073709551616", "007", "7", "2026-11-21:0042")
    for seq in accepted:
        response = await hit(client, secret, app_id, 1, **{SEQ: seq})
        assert response.status_code == 200, seq
        assert not _replayed(response), seq
    padded = await hit(client, secret, app_id, 1, **{SEQ: " \t007\t "})
    assert _replayed(padded)
    refused: tuple[bytes, ...] = (
        b"+5",
        b"1,2",
        b"1 2",
        b"1" * 65,
        b"",
        "\u0661\u0662".encode(),
        b"7\xa0",
    )
    for raw in refused:
        body = {"appId": app_id, "api": "hit", "version": "latest", "args": {"n": 1}}
        headers = [(b"x-api-key", secret.encode()), (b"x-request-seq", raw)]
        response = await client.post("/api/v1/invocations", json=body, headers=headers)
        assert_error(response, 400, "invalid_request_seq")
    assert await total(client, secret, app_id) == len(accepted)


async def test_a_sequence_number_is_the_credential_s(client: AsyncClient) -> None:
    """Another key of the same workspace, or another tenant, numbers its own requests."""
    app_id, consumer, secret = await _hits(client)
    _, second = await app_key(client, consumer, app_id)
    _, stranger = await app_key(client, await register(client), app_id)
    for who in (secret, second, stranger):
        response = await hit(client, who, app_id, 1, **{SEQ: "1"})
        assert response.status_code == 200
        assert not _replayed(response)
    assert await total(client, secret, app_id) == 2
    assert await total(client, stranger, app_id) == 1


async def test_a_sequence_number_used_in_another_workspace_is_422_not_its_answer(
    client: AsyncClient,
) -> None:
    """A console caller's number is theirs in every workspace, but `X-Workspace-Id` was in no
    fingerprinted byte: the number sent to act in another workspace replayed the first
    workspace's answer (an app id of the other workspace) and created nothing there."""
    user = await register(client)
    team = await new_workspace(client, user)
    seq = {**user.headers, SEQ: "7"}
    first = await _create(client, seq)
    assert first.status_code == 200, first.text
    elsewhere = await _create(client, {**seq, "X-Workspace-Id": team})
    assert_error(elsewhere, 422, "idempotency_key_mismatch")
    assert await _apps(client, {**user.headers, "X-Workspace-Id": team}) == 0
    # Naming the workspace the number was first used in is the same request: replayed.
    named = await _create(client, {**seq, "X-Workspace-Id": user.workspace_id})
    assert _replayed(named)
    assert named.content == first.content


async def test_tokens_fail_closed_when_redis_is_unreachable(
    settings: Settings, client: AsyncClient
) -> None:
    """503 `idempotency_unavailable` on issue and spend, on both edges, never a 500; nothing
    runs, and a key sent alongside is freed for the retry."""
    app_id, consumer, secret = await _hits(client)
    dead = settings.model_copy(update={"redis_url": "redis://127.0.0.1:1/0"})
    made_up = "A" * 43
    async with app_client(dead) as (_, http):
        for headers in (consumer.headers, {"X-Api-Key": secret}):
            issued = await http.get(TOKENS, headers=headers)
            assert_error(issued, 503, "idempotency_unavailable")
            assert issued.headers["Retry-After"] == "1"
        keyed = {TOKEN: made_up, "Idempotency-Key": "k"}
        for response in (
            await _create(http, {**consumer.headers, **keyed}),
            await hit(http, secret, app_id, 1, **keyed),
        ):
            assert_error(response, 503, "idempotency_unavailable")
        assert (
            await _create(http, {**consumer.headers, "Idempotency-Key": "k"})
        ).status_code == 200
        assert (await hit(http, secret, app_id, 1, **{"Idempotency-Key": "k"})).status_code == 200
    assert await total(client, secret, app_id) == 1
    assert await _apps(client, consumer.headers) == 1


async def test_a_removed_member_gets_no_replay_on_a_route_naming_the_workspace(
    client: AsyncClient,
) -> None:
    """`/workspaces/{id}/...` routes act in the path's workspace, but the scope was the header's
    (the personal workspace when left out): a removed admin's retry of a rename got the stored
    answer instead of the route's 404. Nor is a number they used in the team replayed to them
    acting in their personal workspace."""
    owner, workspace_id, members = await team(client, "admin")
    admin = members["admin"]
    rename = {**admin.headers, "Idempotency-Key": "rename"}
    path = f"/api/v1/workspaces/{workspace_id}"
    first = await client.patch(path, json={"name": "Renamed"}, headers=rename)
    assert first.status_code == 200, first.text
    assert _replayed(await client.patch(path, json={"name": "Renamed"}, headers=rename))
    made = await _create(client, {**admin.headers, SEQ: "41", "X-Workspace-Id": workspace_id})
    assert made.status_code == 200, made.text
    removed = await client.delete(f"{path}/members/{admin.account_id}", headers=owner.headers)
    assert removed.status_code == 200, removed.text
    after = await client.patch(path, json={"name": "Renamed"}, headers=rename)
    assert_error(after, 404, "workspace_not_found")
    assert not _replayed(after)
    personal = await _create(client, {**admin.headers, SEQ: "41"})
    assert_error(personal, 422, "idempotency_key_mismatch")
    assert await _apps(client, admin.headers) == 0


async def test_a_stale_workspace_header_does_not_switch_idempotency_off(
    client: AsyncClient,
) -> None:
    """A workspace the caller is no member of (left, removed, deleted) in `X-Workspace-Id`
    made the middleware pass the request on untouched: routes that act in no workspace ran
    once per retry of one key (two workspaces created) and spent no token (a profile edit
    went through twice with one)."""
    user = await register(client)
    stale = await new_workspace(client, await register(client))
    keyed = {**user.headers, "X-Workspace-Id": stale, "Idempotency-Key": "w1"}
    first = await client.post("/api/v1/workspaces", json={"name": "T"}, headers=keyed)
    retry = await client.post("/api/v1/workspaces", json={"name": "T"}, headers=keyed)
    assert first.status_code == 200, first.text
    assert _replayed(retry)
    assert retry.content == first.content
    listed = data_of(await client.get("/api/v1/workspaces?pageSize=100", headers=user.headers))
    assert sorted(w["name"] for w in listed["list"] if not w["personal"]) == ["T"]
    token = await _token(client, user.headers)
    edit = {**user.headers, "X-Workspace-Id": stale, TOKEN: token}
    profile = "/api/v1/user/profile"
    assert (await client.patch(profile, json={"name": "Z"}, headers=edit)).status_code == 200
    twice = await client.patch(profile, json={"name": "Z"}, headers=edit)
    assert_error(twice, 409, "duplicate_request")
    # A route acting in that workspace still refuses it, and stores nothing.
    refused = await _create(
        client, {**user.headers, "X-Workspace-Id": stale, "Idempotency-Key": "a"}
    )
    assert_error(refused, 404, "workspace_not_found")
