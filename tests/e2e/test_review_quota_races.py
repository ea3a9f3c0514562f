"""Review: every count-based cap holds under concurrent requests (PostgreSQL's READ COMMITTED lets
two count-then-insert requests both see n - 1). With room for exactly one more, a burst gets one
success and the documented refusal for the rest, the stored count stays at the cap, no request
is a 5xx, and the quota-hit log counts each refusal once. Also: a workspace (or subscription)
deleted while a quota-checked creation waits on its lock is a 404, not a 500 from the foreign
key."""

import asyncio
from collections import Counter
from collections.abc import Awaitable, Sequence
from typing import Any

import pytest
from fastapi import FastAPI
from httpx import AsyncClient, Response
from sqlalchemy import func, select

from apiforge.accounts import settings_service
from apiforge.accounts.models import Account
from apiforge.builder.models import App
from apiforge.core.settings import Settings
from apiforge.datasets.models import Record
from apiforge.files.models import File
from apiforge.keys.models import ApiKey, Subscription
from apiforge.plans.meter import quota_meter
from apiforge.workspaces.models import Membership, Workspace
from tests._servers import running_servers
from tests.e2e._apps import new_app
from tests.e2e._keys import app_key, call, create_key, notes_app, subscribe
from tests.e2e._plans import on_plan
from tests.e2e._workspaces import assert_error, data_of, new_workspace, while_deleting
from tests.factories import User, make_admin, register

BURST = 8


async def _burst(requests: Sequence[Awaitable[Response]]) -> list[Response]:
    """All at once; none may be a 5xx (an IntegrityError or a deadlock surfacing)."""
    responses = list(await asyncio.gather(*requests))
    assert all(r.status_code < 500 for r in responses), [r.text for r in responses]
    return responses


def _one_wins(responses: list[Response], status: int, reason: str) -> Response:
    """Exactly one 200, every other the refusal `status`/`reason`; the winner."""
    counts = Counter(r.status_code for r in responses)
    assert counts == {200: 1, status: len(responses) - 1}, [r.text for r in responses]
    for response in responses:
        if response.status_code != 200:
            assert_error(response, status, reason)
    [winner] = [r for r in responses if r.status_code == 200]
    return winner


def _quota_refusals(responses: list[Response], quota: str, limit: int) -> None:
    for response in responses:
        if response.status_code == 403:
            data = assert_error(response, 403, "quota_exceeded")
            assert (data["quota"], data["limit"], data["used"]) == (quota, limit, limit)


async def _count(app: FastAPI, model: Any, *where: Any) -> int:
    async with app.state.engine.connect() as connection:
        return int(await connection.scalar(select(func.count()).select_from(model).where(*where)))


async def _hits(app: FastAPI, client: AsyncClient, admin: User, workspace_id: str) -> Counter[str]:
    """Refusals noted per `quota/operation` (summed over rows: a burst may cross a minute)."""
    await quota_meter(app.state.engine).hits.flush()
    response = await client.get(
        "/api/v1/admin/quota-hits",
        params={"workspaceId": workspace_id, "pageSize": 100},
        headers=admin.headers,
    )
    noted: Counter[str] = Counter()
    for hit in data_of(response)["list"]:
        noted[f"{hit['quota']}/{hit['operation']}"] += hit["hits"]
    return noted


async def _dataset(client: AsyncClient, owner: User) -> str:
    app_id = await new_app(client, owner.headers)
    body = {"appId": app_id, "name": "notes", "fields": [{"name": "text", "type": "string"}]}
    dataset_id: str = data_of(
        await client.post("/api/v1/datasets", json=body, headers=owner.headers)
    )["id"]
    return dataset_id


# --- plan quotas counted under the workspace (or account) lock ----------------------------------


async def test_a_burst_of_member_adds_takes_only_the_last_seat(
    app: FastAPI, client: AsyncClient
) -> None:
    owner = await register(client)
    workspace_id = await new_workspace(client, owner)
    admin = await make_admin(app, client)
    await on_plan(client, admin, workspace_id, "seats", members=2)
    newcomers = [await register(client) for _ in range(BURST)]
    responses = await _burst(
        [
            client.post(
                f"/api/v1/workspaces/{workspace_id}/members",
                json={"email": user.email, "role": "viewer"},
                headers=owner.headers,
            )
            for user in newcomers
        ]
    )
    _one_wins(responses, 403, "quota_exceeded")
    _quota_refusals(responses, "members", 2)
    assert await _count(app, Membership, Membership.workspace_id == workspace_id) == 2
    assert await _hits(app, client, admin, workspace_id) == {"members/members.add": BURST - 1}


async def test_a_burst_of_app_creations_and_imports_takes_only_the_last_app(
    app: FastAPI, client: AsyncClient
) -> None:
    owner = await register(client)
    exported = await new_app(client, owner.headers, "Source")
    exported_doc = await client.get(f"/api/v1/apps/{exported}/export", headers=owner.headers)
    assert exported_doc.status_code == 200, exported_doc.text
    document = exported_doc.json()
    admin = await make_admin(app, client)
    await on_plan(client, admin, owner.workspace_id, "two-apps", apps=2)
    creations = [
        client.post("/api/v1/apps", json={"name": f"A{n}"}, headers=owner.headers)
        for n in range(BURST // 2)
    ]
    imports = [
        client.post("/api/v1/apps/import", json=document, headers=owner.headers)
        for _ in range(BURST // 2)
    ]
    responses = await _burst([*creations, *imports])
    _one_wins(responses, 403, "quota_exceeded")
    _quota_refusals(responses, "apps", 2)
    assert await _count(app, App, App.workspace_id == owner.workspace_id) == 2
    assert await _hits(app, client, admin, owner.workspace_id) == {"apps/apps.create": BURST - 1}


async def test_a_burst_of_workspace_creations_takes_only_the_last_one(
    app: FastAPI, client: AsyncClient
) -> None:
    owner = await register(client)
    admin = await make_admin(app, client)
    await on_plan(client, admin, owner.workspace_id, "two-workspaces", workspaces=2)
    responses = await _burst(
        [
            client.post("/api/v1/workspaces", json={"name": f"W{n}"}, headers=owner.headers)
            for n in range(BURST)
        ]
    )
    _one_wins(responses, 403, "quota_exceeded")
    _quota_refusals(responses, "workspaces", 2)
    assert await _count(app, Workspace, Workspace.owner_id == owner.account_id) == 2
    noted = await _hits(app, client, admin, owner.workspace_id)
    assert noted == {"workspaces/workspaces.create": BURST - 1}


async def test_a_burst_of_uploads_takes_only_the_last_one_of_the_month(
    app: FastAPI, client: AsyncClient
) -> None:
    owner = await register(client)
    admin = await make_admin(app, client)
    await on_plan(client, admin, owner.workspace_id, "one-upload", uploadsPerMonth=1)
    responses = await _burst(
        [
            client.post(
                "/api/v1/files",
                files={"file": (f"{n}.txt", b"z" * 500, "text/plain")},
                headers=owner.headers,
            )
            for n in range(BURST)
        ]
    )
    _one_wins(responses, 403, "quota_exceeded")
    _quota_refusals(responses, "uploadsPerMonth", 1)
    assert await _count(app, File, File.workspace_id == owner.workspace_id) == 1
    noted = await _hits(app, client, admin, owner.workspace_id)
    assert noted == {"uploadsPerMonth/files.upload": BURST - 1}


# --- plan quotas kept by the in-process meter (exact within one process) ------------------------


async def test_a_burst_of_records_takes_only_the_last_record(
    app: FastAPI, client: AsyncClient
) -> None:
    owner = await register(client)
    dataset_id = await _dataset(client, owner)
    admin = await make_admin(app, client)
    await on_plan(client, admin, owner.workspace_id, "one-record", records=1)
    url = f"/api/v1/datasets/{dataset_id}/records"
    responses = await _burst(
        [client.post(url, json={"text": f"r{n}"}, headers=owner.headers) for n in range(BURST)]
    )
    _one_wins(responses, 403, "quota_exceeded")
    assert await _count(app, Record, Record.partition == owner.workspace_id) == 1
    assert await _hits(app, client, admin, owner.workspace_id) == {
        "records/records.insert": BURST - 1
    }


async def test_a_burst_of_records_takes_only_the_storage_left(
    app: FastAPI, client: AsyncClient
) -> None:
    owner = await register(client)
    dataset_id = await _dataset(client, owner)
    admin = await make_admin(app, client)
    # {"text":"<10 chars>"} is 21 bytes as stored: one fits in 30, two don't.
    await on_plan(client, admin, owner.workspace_id, "thirty-bytes", storageBytes=30)
    url = f"/api/v1/datasets/{dataset_id}/records"
    responses = await _burst(
        [client.post(url, json={"text": f"{n:010d}"}, headers=owner.headers) for n in range(BURST)]
    )
    _one_wins(responses, 403, "quota_exceeded")
    for response in responses:
        if response.status_code == 403:
            assert response.json()["data"]["quota"] == "storageBytes"
    async with app.state.engine.connect() as connection:
        stored = await connection.scalar(
            select(func.coalesce(func.sum(Record.size), 0)).where(
                Record.partition == owner.workspace_id
            )
        )
    assert stored == 21
    noted = await _hits(app, client, admin, owner.workspace_id)
    assert noted == {"storageBytes/records.insert": BURST - 1}


async def test_a_burst_of_gateway_calls_takes_only_the_last_call_of_the_month(
    app: FastAPI, client: AsyncClient
) -> None:
    builder, consumer = await register(client), await register(client)
    app_id = await notes_app(client, builder, visibility="public")
    _, secret = await app_key(client, consumer, app_id)
    admin = await make_admin(app, client)
    await on_plan(client, admin, consumer.workspace_id, "one-call", callsPerMonth=1)
    responses = await _burst(
        [call(client, secret, app_id, "addNote", {"text": f"n{n}"}) for n in range(BURST)]
    )
    _one_wins(responses, 403, "quota_exceeded")
    _quota_refusals(responses, "callsPerMonth", 1)
    assert await _count(app, Record, Record.partition == consumer.workspace_id) == 1
    noted = await _hits(app, client, admin, consumer.workspace_id)
    assert noted == {"callsPerMonth/invocations": BURST - 1}


# --- caps that are not plan quotas --------------------------------------------------------------


async def test_a_burst_of_workspace_keys_takes_only_the_tenth(
    app: FastAPI, client: AsyncClient
) -> None:
    owner = await register(client)
    for _ in range(9):
        await create_key(client, owner.headers, type="ws", role="viewer")
    body = {"type": "ws", "name": "k", "role": "viewer"}
    responses = await _burst(
        [client.post("/api/v1/api-keys", json=body, headers=owner.headers) for _ in range(BURST)]
    )
    _one_wins(responses, 400, "too_many_api_keys")
    assert await _count(app, ApiKey, ApiKey.workspace_id == owner.workspace_id) == 10


async def test_a_burst_of_app_and_publishable_keys_takes_only_the_tenth(
    app: FastAPI, client: AsyncClient
) -> None:
    builder, consumer = await register(client), await register(client)
    app_id = await notes_app(client, builder, visibility="public")
    subscription_id = await subscribe(client, consumer.headers, app_id)
    for _ in range(9):
        await create_key(client, consumer.headers, type="app", appId=app_id)
    app_body = {"type": "app", "name": "a", "appId": app_id}
    pk_body = {
        "type": "pk",
        "name": "p",
        "appId": app_id,
        "allowedOrigins": ["https://example.com"],
    }
    responses = await _burst(
        [
            client.post("/api/v1/api-keys", json=body, headers=consumer.headers)
            for body in [app_body, pk_body] * (BURST // 2)
        ]
    )
    _one_wins(responses, 400, "too_many_api_keys")
    assert await _count(app, ApiKey, ApiKey.subscription_id == subscription_id) == 10


async def test_a_burst_of_rights_takes_only_the_hundredth(
    app: FastAPI, client: AsyncClient
) -> None:
    owner = await register(client)
    app_id = await new_app(client, owner.headers)
    url = f"/api/v1/apps/{app_id}/user-rights"
    held = [f"r{n}" for n in range(99)]
    body = {"userId": "u1", "target": "org", "rights": held}
    data_of(await client.post(url, json=body, headers=owner.headers))
    responses = await _burst(
        [
            client.post(url, json={**body, "rights": [f"new{n}"]}, headers=owner.headers)
            for n in range(BURST)
        ]
    )
    winner = _one_wins(responses, 400, "too_many_rights")
    assert len(data_of(winner)["rights"]) == 100
    listed = data_of(await client.get(url, params={"userId": "u1"}, headers=owner.headers))
    assert [len(item["rights"]) for item in listed["list"]] == [100]


async def test_a_burst_of_app_settings_takes_only_the_last_one(
    client: AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(settings_service, "MAX_APP_SETTINGS", 3)
    owner = await register(client)
    base = "/api/v1/user/settings/apps/someapp"
    for key in ("a", "b"):
        data_of(await client.put(f"{base}/{key}", json={"value": 1}, headers=owner.headers))
    responses = await _burst(
        [
            client.put(f"{base}/new{n}", json={"value": n}, headers=owner.headers)
            for n in range(BURST)
        ]
    )
    _one_wins(responses, 403, "settings_limit_reached")
    listed = data_of(await client.get(f"{base}?pageSize=100", headers=owner.headers))
    assert listed["totalCount"] == 3


async def test_a_burst_of_secrets_takes_only_the_fiftieth(
    app: FastAPI, client: AsyncClient
) -> None:
    owner = await register(client)
    app_id = await new_app(client, owner.headers)
    secrets = {f"S{n}": "v" for n in range(49)}
    url = f"/api/v1/apps/{app_id}"
    data_of(await client.patch(url, json={"secrets": secrets}, headers=owner.headers))
    responses = await _burst(
        [
            client.patch(url, json={"secrets": {f"NEW{n}": "v"}}, headers=owner.headers)
            for n in range(BURST)
        ]
    )
    assert Counter(r.status_code for r in responses)[200] >= 1, [r.text for r in responses]
    for response in responses:  # the rest lost the race (409) or found the app full (400)
        if response.status_code == 409:
            assert_error(response, 409, "concurrent_update")
        elif response.status_code == 400:
            assert_error(response, 400, "too_many_secrets")
    state = data_of(await client.get(url, headers=owner.headers))
    assert len(state["secretNames"]) == 50


# --- two server processes sharing the database ---------------------------------------------------


async def test_two_processes_share_the_locked_caps(
    app: FastAPI, client: AsyncClient, settings: Settings
) -> None:
    """Members, apps, uploads and ws keys: exact on any number of processes (the meter's quotas,
    records and calls, are soft across processes by design: docs/plans.md)."""
    owner = await register(client)
    workspace_id = await new_workspace(client, owner)
    admin = await make_admin(app, client)
    await on_plan(client, admin, workspace_id, "shared-caps", members=2, apps=1, uploadsPerMonth=1)
    headers = {**owner.headers, "X-Workspace-Id": workspace_id}
    for _ in range(9):
        await create_key(client, headers, type="ws", role="viewer")
    newcomers = [await register(client) for _ in range(BURST)]
    async with running_servers(settings, count=2) as urls:
        https = [AsyncClient(base_url=url, timeout=60) for url in urls]
        try:

            def on(n: int) -> AsyncClient:
                return https[n % 2]

            members = await _burst(
                [
                    on(n).post(
                        f"/api/v1/workspaces/{workspace_id}/members",
                        json={"email": user.email, "role": "viewer"},
                        headers=owner.headers,
                    )
                    for n, user in enumerate(newcomers)
                ]
            )
            apps = await _burst(
                [
                    on(n).post("/api/v1/apps", json={"name": f"A{n}"}, headers=headers)
                    for n in range(BURST)
                ]
            )
            uploads = await _burst(
                [
                    on(n).post(
                        "/api/v1/files",
                        files={"file": (f"{n}.txt", b"u" * 100, "text/plain")},
                        headers=headers,
                    )
                    for n in range(BURST)
                ]
            )
            keys = await _burst(
                [
                    on(n).post(
                        "/api/v1/api-keys",
                        json={"type": "ws", "name": "k", "role": "viewer"},
                        headers=headers,
                    )
                    for n in range(BURST)
                ]
            )
        finally:
            for http in https:
                await http.aclose()
    for responses in (members, apps, uploads):
        _one_wins(responses, 403, "quota_exceeded")
    _one_wins(keys, 400, "too_many_api_keys")
    assert await _count(app, Membership, Membership.workspace_id == workspace_id) == 2
    assert await _count(app, App, App.workspace_id == workspace_id) == 1
    assert await _count(app, File, File.workspace_id == workspace_id) == 1
    assert await _count(app, ApiKey, ApiKey.workspace_id == workspace_id) == 10


# --- the locked row deleted while a creation waits on it -----------------------------------------


async def test_a_member_added_to_a_workspace_deleted_meanwhile_is_a_404(
    app: FastAPI, client: AsyncClient
) -> None:
    owner = await register(client)
    workspace_id = await new_workspace(client, owner)
    newcomer = await register(client)
    response = await while_deleting(
        app,
        Workspace,
        workspace_id,
        lambda: client.post(
            f"/api/v1/workspaces/{workspace_id}/members",
            json={"email": newcomer.email, "role": "viewer"},
            headers=owner.headers,
        ),
    )
    assert_error(response, 404, "workspace_not_found")


async def test_a_member_whose_account_is_deleted_meanwhile_is_a_404(
    app: FastAPI, client: AsyncClient
) -> None:
    owner = await register(client)
    workspace_id = await new_workspace(client, owner)
    newcomer = await register(client)
    response = await while_deleting(
        app,
        Account,
        newcomer.account_id,
        lambda: client.post(
            f"/api/v1/workspaces/{workspace_id}/members",
            json={"email": newcomer.email, "role": "viewer"},
            headers=owner.headers,
        ),
    )
    assert_error(response, 404, "account_not_found")
    assert await _count(app, Membership, Membership.workspace_id == workspace_id) == 1


async def test_an_app_created_in_a_workspace_deleted_meanwhile_is_a_404(
    app: FastAPI, client: AsyncClient
) -> None:
    owner = await register(client)
    workspace_id = await new_workspace(client, owner)
    headers = {**owner.headers, "X-Workspace-Id": workspace_id}
    response = await while_deleting(
        app,
        Workspace,
        workspace_id,
        lambda: client.post("/api/v1/apps", json={"name": "Late"}, headers=headers),
    )
    assert_error(response, 404, "workspace_not_found")
    assert await _count(app, App, App.workspace_id == workspace_id) == 0


async def test_a_workspace_key_created_in_a_workspace_deleted_meanwhile_is_a_404(
    app: FastAPI, client: AsyncClient
) -> None:
    owner = await register(client)
    workspace_id = await new_workspace(client, owner)
    headers = {**owner.headers, "X-Workspace-Id": workspace_id}
    body = {"type": "ws", "name": "late", "role": "viewer"}
    response = await while_deleting(
        app,
        Workspace,
        workspace_id,
        lambda: client.post("/api/v1/api-keys", json=body, headers=headers),
    )
    assert_error(response, 404, "workspace_not_found")
    assert await _count(app, ApiKey, ApiKey.workspace_id == workspace_id) == 0


async def test_an_app_key_created_on_a_subscription_deleted_meanwhile_is_a_404(
    app: FastAPI, client: AsyncClient
) -> None:
    builder, consumer = await register(client), await register(client)
    app_id = await notes_app(client, builder, visibility="public")
    subscription_id = await subscribe(client, consumer.headers, app_id)
    body = {"type": "app", "name": "late", "appId": app_id}
    response = await while_deleting(
        app,
        Subscription,
        subscription_id,
        lambda: client.post("/api/v1/api-keys", json=body, headers=consumer.headers),
    )
    assert_error(response, 404, "subscription_not_found")


async def test_a_member_already_added_by_a_racing_request_is_a_conflict(
    app: FastAPI, client: AsyncClient
) -> None:
    owner = await register(client)
    workspace_id = await new_workspace(client, owner)
    newcomer = await register(client)
    responses = await _burst(
        [
            client.post(
                f"/api/v1/workspaces/{workspace_id}/members",
                json={"email": newcomer.email, "role": "viewer"},
                headers=owner.headers,
            )
            for _ in range(BURST)
        ]
    )
    _one_wins(responses, 409, "already_member")
    assert await _count(app, Membership, Membership.workspace_id == workspace_id) == 2


async def test_ownership_handed_to_an_account_deleted_meanwhile_is_a_404(
    app: FastAPI, client: AsyncClient
) -> None:
    owner = await register(client)
    workspace_id = await new_workspace(client, owner)
    heir = await register(client)
    data_of(
        await client.post(
            f"/api/v1/workspaces/{workspace_id}/members",
            json={"email": heir.email, "role": "admin"},
            headers=owner.headers,
        )
    )
    response = await while_deleting(
        app,
        Account,
        heir.account_id,
        lambda: client.post(
            f"/api/v1/workspaces/{workspace_id}/transfer",
            json={"accountId": heir.account_id},
            headers=owner.headers,
        ),
    )
    # Gone as a member (the account's memberships went with it) or as an account: 404 either way.
    assert response.status_code == 404, response.text
    assert response.json()["data"]["error"] in ("member_not_found", "account_not_found")
    async with app.state.engine.connect() as connection:
        owner_id = await connection.scalar(
            select(Workspace.owner_id).where(Workspace.id == workspace_id)
        )
    assert owner_id == owner.account_id
