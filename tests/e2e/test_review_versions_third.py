"""Third review of versions and publishing: the breaking-change report compares params as the
engine reads them and sees publishable keys shut out, and a snapshot cannot call what it will
never have (`dev`, an API missing from the version) — over HTTP, on both backends."""

from typing import Any

from httpx import AsyncClient

from tests.e2e._apps import apis_of, app_state, new_api, new_app, set_step
from tests.e2e._keys import app_key, call, create_key, notes_app
from tests.e2e._workspaces import assert_error, data_of
from tests.factories import register

ORIGIN = "https://shop.example"


def _kinds(changes: list[dict[str, Any]]) -> list[tuple[str, str, str, int]]:
    return sorted((c["api"], c["kind"], c["param"], c["breaking"]) for c in changes)


async def test_publish_compares_lax_params_as_the_engine_reads_them(client: AsyncClient) -> None:
    """Params are stored as sent, and the engine accepts `"min": "5"` or `"required": "false"`.
    Compared raw, the first made publishing a 500 (`"5" > 1`) and the second a breaking
    `required_param_added` (the string "false" is truthy) that only a major bump got past."""
    user = await register(client)
    h = user.headers
    app_id = await new_app(client, h)
    url = f"/api/v1/apps/{app_id}/versions"
    n = {"name": "n", "type": "integer", "min": 1}
    api_id = await new_api(client, h, app_id, "count", params=[n])
    data_of(await client.post(url, json={"bump": "major"}, headers=h))
    api_url = f"/api/v1/apps/{app_id}/apis/{api_id}"

    narrowed = [{**n, "min": "5"}, {"name": "tag", "required": "false"}]
    data_of(await client.patch(api_url, json={"params": narrowed}, headers=h))
    before = await app_state(client, h, app_id)
    refused = await client.post(url, json={"bump": "minor"}, headers=h)
    data = assert_error(refused, 409, "breaking_change_requires_major")
    assert _kinds(data["changes"]) == [
        ("count", "param_added", "tag", 0),
        ("count", "param_range_narrowed", "n", 1),
    ]
    assert await app_state(client, h, app_id) == before
    published = data_of(await client.post(url, json={"bump": "major"}, headers=h))
    assert published["version"] == "2.0.0"

    # An optional param added, however its `required` is spelled, is no break.
    added = [*narrowed, {"name": "lang", "required": "no"}, {"name": "page", "required": 0}]
    data_of(await client.patch(api_url, json={"params": added}, headers=h))
    patch = data_of(await client.post(url, json={"bump": "patch"}, headers=h))
    assert (patch["version"], patch["breaking"]) == ("2.0.1", 0)
    assert _kinds(patch["changes"]) == [
        ("count", "param_added", "lang", 0),
        ("count", "param_added", "page", 0),
    ]
    call_body = {"appId": app_id, "api": "count", "version": "2.0.1", "args": {"n": 5}}
    assert data_of(await client.post("/api/v1/invocations", json=call_body, headers=h)) == {}


async def test_dropping_the_token_requirement_shuts_out_publishable_keys_and_is_breaking(
    client: AsyncClient,
) -> None:
    """A `pk-` key may call an API that requires an end-user token or is public. Dropping the
    token requirement of a non-public API refuses every browser call the published version
    took (403 `publishable_key_not_allowed`), yet publishing it as a patch went through."""
    owner = await register(client)
    h = owner.headers
    app_id = await notes_app(client, owner)
    _, secret = await app_key(client, owner, app_id)
    _, pk = await create_key(client, h, type="pk", appId=app_id, allowedOrigins=[ORIGIN])
    signed = data_of(await call(client, secret, app_id, "signIn", {"user": "alice"}))
    browser = {"Origin": ORIGIN, "Authorization": f"Bearer {signed['session']['token']}"}
    assert data_of(await call(client, pk, app_id, "whoAmI", headers=browser)) == {"me": "alice"}

    who = (await apis_of(client, h, app_id))["whoAmI"]["id"]
    open_api = {"auth": {"requireToken": False}, "steps": [set_step("me", "anyone")]}
    data_of(await client.patch(f"/api/v1/apps/{app_id}/apis/{who}", json=open_api, headers=h))
    url = f"/api/v1/apps/{app_id}/versions"
    before = await app_state(client, h, app_id)
    refused = await client.post(url, json={"bump": "patch"}, headers=h)
    data = assert_error(refused, 409, "breaking_change_requires_major")
    assert _kinds(data["changes"]) == [("whoAmI", "public_removed", "", 1)]
    assert await app_state(client, h, app_id) == before

    # Forced through, the break is real: the browser is refused on the new version only.
    data_of(await client.post(url, json={"bump": "patch", "force": 1}, headers=h))
    assert_error(
        await call(client, pk, app_id, "whoAmI", headers=browser),
        403,
        "publishable_key_not_allowed",
    )
    old = await call(client, pk, app_id, "whoAmI", version="1.0.0", headers=browser)
    assert data_of(old) == {"me": "alice"}

    # `public` withdrawn from an API that still requires a token keeps browsers in: no break.
    public = {"auth": {"requireToken": True, "public": True}, "steps": [set_step("me", "x")]}
    data_of(await client.patch(f"/api/v1/apps/{app_id}/apis/{who}", json=public, headers=h))
    data_of(await client.post(url, json={"bump": "major"}, headers=h))
    private = {"auth": {"requireToken": True}}
    data_of(await client.patch(f"/api/v1/apps/{app_id}/apis/{who}", json=private, headers=h))
    result = data_of(await client.post(url, json={"bump": "patch"}, headers=h))
    assert result["breaking"] == 0
    assert data_of(await call(client, pk, app_id, "whoAmI", headers=browser)) == {"me": "x"}


async def test_a_call_api_step_pinned_to_dev_cannot_be_published(client: AsyncClient) -> None:
    """A published version cannot call `dev`: such a snapshot failed every call that reached
    the step (400 `step_failed`), for as long as the version lived. Publishing refuses it, as
    it refuses a pin to an unpublished version; `dev` itself still runs it."""
    user = await register(client)
    h = user.headers
    app_id = await new_app(client, h)
    await new_api(client, h, app_id, "inner", steps=[set_step("x", 1)])
    pin = {"id": "call", "type": "callApi", "api": "inner", "version": "dev"}
    nested = {"id": "maybe", "type": "if", "condition": True, "then": [pin]}
    outer = await new_api(client, h, app_id, "outer", steps=[nested])
    url = f"/api/v1/apps/{app_id}/versions"
    before = await app_state(client, h, app_id)
    refused = await client.post(url, json={"bump": "major"}, headers=h)
    assert assert_error(refused, 400, "invalid_definition")["errors"] == [
        {
            "field": "apis.outer.steps",
            "message": "callApi pins version dev, which a published version cannot call",
        }
    ]
    assert await app_state(client, h, app_id) == before
    body = {"appId": app_id, "api": "outer", "version": "dev"}
    assert data_of(await client.post("/api/v1/invocations", json=body, headers=h)) == {
        "maybe": True,
        "call": {"x": 1},
    }

    unpinned = {**nested, "then": [{**pin, "version": None}]}
    api_url = f"/api/v1/apps/{app_id}/apis/{outer}"
    data_of(await client.patch(api_url, json={"steps": [unpinned]}, headers=h))
    assert data_of(await client.post(url, json={"bump": "major"}, headers=h))["version"] == "1.0.0"
    body["version"] = "latest"
    assert data_of(await client.post("/api/v1/invocations", json=body, headers=h)) == {
        "maybe": True,
        "call": {"x": 1},
    }


async def test_a_call_api_step_to_an_api_its_version_lacks_cannot_be_published(
    client: AsyncClient,
) -> None:
    """`dev` may call an API not written yet; a snapshot never changes, so a callee it lacks
    (deleted from `dev`, or missing from the pinned version) answered every call of the
    caller with 404 `api_not_found` for as long as the version lived."""
    user = await register(client)
    h = user.headers
    app_id = await new_app(client, h)
    url = f"/api/v1/apps/{app_id}/versions"
    helper = await new_api(client, h, app_id, "helper", steps=[set_step("x", 1)])
    call_helper = {"id": "call", "type": "callApi", "api": "helper"}
    outer = await new_api(client, h, app_id, "outer", steps=[call_helper])
    data_of(await client.post(url, json={"bump": "major"}, headers=h))

    # Deleted from dev: the next version would call a helper it does not have.
    data_of(await client.delete(f"/api/v1/apps/{app_id}/apis/{helper}", headers=h))
    before = await app_state(client, h, app_id)
    refused = await client.post(url, json={"bump": "major"}, headers=h)
    assert assert_error(refused, 400, "invalid_definition")["errors"] == [
        {
            "field": "apis.outer.steps",
            "message": "callApi calls API helper, which version 2.0.0 does not have",
        }
    ]
    assert await app_state(client, h, app_id) == before

    # Pinned to 1.0.0, which has it: published, and it runs.
    api_url = f"/api/v1/apps/{app_id}/apis/{outer}"
    pinned = [{**call_helper, "version": "1.0.0"}]
    data_of(await client.patch(api_url, json={"steps": pinned}, headers=h))
    assert data_of(await client.post(url, json={"bump": "major"}, headers=h))["version"] == "2.0.0"
    body = {"appId": app_id, "api": "outer", "version": "2.0.0"}
    assert data_of(await client.post("/api/v1/invocations", json=body, headers=h)) == {
        "call": {"x": 1}
    }
    # Pinned to 1.0.0 for an API 1.0.0 never had: refused.
    await new_api(client, h, app_id, "later", steps=[set_step("y", 2)])
    late = [{**call_helper, "api": "later", "version": "1.0.0"}]
    data_of(await client.patch(api_url, json={"steps": late}, headers=h))
    refused = await client.post(url, json={"bump": "major"}, headers=h)
    assert assert_error(refused, 400, "invalid_definition")["errors"][0]["message"] == (
        "callApi calls API later, which version 1.0.0 does not have"
    )
