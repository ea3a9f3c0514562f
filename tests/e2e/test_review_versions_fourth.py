"""Fourth review of versions: sunset dates and collection-field removal, attacked together —
a version retired so a field could go cannot come back to silently find nothing, over HTTP, on
both backends."""

from typing import Any

import pytest
from httpx import AsyncClient, Response

from tests.e2e._apps import new_api, new_app
from tests.e2e._keys import app_key, call
from tests.e2e._workspaces import assert_error, data_of
from tests.factories import User, register

pytestmark = pytest.mark.anyio

TEXT: dict[str, Any] = {"name": "text", "type": "string", "required": True}
TAG: dict[str, Any] = {"name": "tag", "type": "string"}
BY_TAG_STEPS = [
    {
        "id": "notes",
        "type": "getMany",
        "collection": "notes",
        "filter": {"tag": {"_eq": {"expr": "args.tag"}}},
    }
]
BY_TAG_PARAMS = [{"name": "tag", "type": "string", "required": True}]


async def _tagged_app(client: AsyncClient, owner: User) -> tuple[str, str]:
    """(app id, dataset id): `notes` (text, tag) and `byTag` filtering on `tag`, as 1.0.0."""
    app_id = await new_app(client, owner.headers, "Notes", visibility="public")
    body = {"appId": app_id, "name": "notes", "fields": [TEXT, TAG]}
    dataset = data_of(await client.post("/api/v1/datasets", json=body, headers=owner.headers))
    await new_api(
        client, owner.headers, app_id, "byTag", params=BY_TAG_PARAMS, steps=BY_TAG_STEPS, price=100
    )
    url = f"/api/v1/apps/{app_id}/versions"
    data_of(await client.post(url, json={"bump": "major"}, headers=owner.headers))
    return app_id, str(dataset["id"])


async def _put_fields(
    client: AsyncClient, owner: User, dataset_id: str, fields: list[Any]
) -> Response:
    return await client.put(
        f"/api/v1/datasets/{dataset_id}",
        json={"name": "notes", "fields": fields},
        headers={**owner.headers, "If-Match": "*"},
    )


async def _set_deprecated(
    client: AsyncClient, owner: User, app_id: str, version: str, flag: int
) -> Response:
    url = f"/api/v1/apps/{app_id}/versions/{version}"
    return await client.patch(url, json={"deprecated": flag}, headers=owner.headers)


async def test_a_version_that_names_a_removed_field_cannot_be_undeprecated(
    client: AsyncClient,
) -> None:
    """Removing a field is allowed once every version naming it is deprecated. Undeprecating
    such a version afterwards brought back exactly what the removal rule refuses: a live
    version whose lookups on the erased field silently find nothing."""
    owner = await register(client)
    app_id, dataset_id = await _tagged_app(client, owner)
    data_of(await _set_deprecated(client, owner, app_id, "1.0.0", 1))
    data_of(await _put_fields(client, owner, dataset_id, [TEXT]))
    url = f"/api/v1/apps/{app_id}/versions/1.0.0"
    before = data_of(await client.get(url, headers=owner.headers))

    refused = await _set_deprecated(client, owner, app_id, "1.0.0", 0)
    data = assert_error(refused, 409, "version_uses_removed_field")
    assert [e["field"] for e in data["errors"]] == ["tag"]
    assert "byTag" in data["errors"][0]["message"]
    assert data_of(await client.get(url, headers=owner.headers)) == before
    _, secret = await app_key(client, owner, app_id)
    still = await call(client, secret, app_id, "byTag", {"tag": "x"}, version="1.0.0")
    assert still.headers["Deprecation"].startswith("@")

    # The field back with the type the version reads: it may serve again.
    data_of(await _put_fields(client, owner, dataset_id, [TEXT, TAG]))
    back = data_of(await _set_deprecated(client, owner, app_id, "1.0.0", 0))
    assert (back["deprecated"], back["sunset"]) == (0, None)


async def test_removing_a_field_compiles_each_distinct_api_once_however_many_versions(
    client: AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """APIs that mention a field's name only in text (here `tag` in a literal and in an arg
    name) don't block its removal, but each had to be compiled to know: once per API per
    published version, on the event loop, although unchanged APIs are the same definition in
    every snapshot. Seven versions of three such APIs compiled 21 times (and twice more each
    on a refusal); each distinct definition is compiled once now."""
    owner = await register(client)
    app_id = await new_app(client, owner.headers, "Notes")
    body = {"appId": app_id, "name": "notes", "fields": [TEXT, TAG]}
    dataset = data_of(await client.post("/api/v1/datasets", json=body, headers=owner.headers))
    literal = [{"id": "say", "type": "set", "value": "tag"}]
    by_arg = [{"id": "say", "type": "set", "value": {"expr": "args.tag"}}]
    for api, steps in (("hello", literal), ("echoTag", by_arg), ("tagLine", literal)):
        params = [{"name": "tag", "type": "string"}] if api == "echoTag" else []
        await new_api(client, owner.headers, app_id, api, params=params, steps=steps)
    url = f"/api/v1/apps/{app_id}/versions"
    for _ in range(7):
        data_of(await client.post(url, json={"bump": "patch"}, headers=owner.headers))

    from apiforge.datasets import published
    from apiforge.engine import compiler

    compiled: list[str] = []
    real = compiler.compile_api

    def counting(definition: Any, *args: Any, **kwargs: Any) -> Any:
        compiled.append(str(definition["api"]))
        return real(definition, *args, **kwargs)

    monkeypatch.setattr(published, "compile_api", counting)
    data_of(await _put_fields(client, owner, str(dataset["id"]), [TEXT]))
    assert sorted(compiled) == ["echoTag", "hello", "tagLine"]


async def test_a_field_named_deep_inside_nested_steps_blocks_its_removal(
    client: AsyncClient,
) -> None:
    """`if` → `transaction` → `forEach` → `count` filtering on the field: found and named."""
    owner = await register(client)
    app_id = await new_app(client, owner.headers, "Notes")
    body = {"appId": app_id, "name": "notes", "fields": [TEXT, TAG]}
    dataset = data_of(await client.post("/api/v1/datasets", json=body, headers=owner.headers))
    count = {
        "id": "n",
        "type": "count",
        "collection": "notes",
        "filter": {"tag": {"_eq": {"expr": "item"}}},
    }
    each = {
        "id": "each",
        "type": "forEach",
        "items": {"expr": "args.tags"},
        "maxIterations": 3,
        "steps": [count],
    }
    steps = [
        {
            "id": "maybe",
            "type": "if",
            "condition": {"expr": "has(args.tags)"},
            "then": [{"id": "tx", "type": "transaction", "steps": [each]}],
        }
    ]
    params = [{"name": "tags", "type": "array"}]
    await new_api(client, owner.headers, app_id, "counts", params=params, steps=steps, price=100)
    url = f"/api/v1/apps/{app_id}/versions"
    data_of(await client.post(url, json={"bump": "major"}, headers=owner.headers))
    refused = await _put_fields(client, owner, str(dataset["id"]), [TEXT])
    data = assert_error(refused, 409, "field_in_published_version")
    assert [e["field"] for e in data["errors"]] == ["tag"]
    assert "API counts" in data["errors"][0]["message"]


async def test_a_stale_if_match_on_a_version_names_the_current_revision(
    client: AsyncClient,
) -> None:
    """A version's lock is its `revision`; `version` is its semver label everywhere else (the
    read model, the 410). The 412 said `"version": 2` — a number where clients read a label."""
    owner = await register(client)
    app_id, _ = await _tagged_app(client, owner)
    url = f"/api/v1/apps/{app_id}/versions/1.0.0"
    data_of(await client.patch(url, json={"deprecated": 1}, headers=owner.headers))
    stale = {**owner.headers, "If-Match": '"1"'}
    refused = await client.patch(url, json={"deprecated": 0}, headers=stale)
    data = assert_error(refused, 412, "precondition_failed")
    assert data == {"error": "precondition_failed", "revision": 2}
    assert data_of(await client.get(url, headers=owner.headers))["deprecated"] == 1
