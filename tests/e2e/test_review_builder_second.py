"""Second review of the builder: publishing under concurrency, what a snapshot may pin, and
tenant isolation of every builder route — over HTTP, on both backends."""

import asyncio
from typing import Any

from httpx import AsyncClient

from tests.e2e._apps import app_state, new_api, new_app
from tests.e2e._workspaces import assert_error, data_of
from tests.factories import User, register


def _counts(n: int) -> list[dict[str, Any]]:
    """`n` steps of 1 RU each."""
    return [{"id": f"c{i}", "type": "count", "collection": "hits"} for i in range(n)]


async def _app_with_hits(client: AsyncClient, owner: User) -> str:
    app_id = await new_app(client, owner.headers, "Wrapped")
    body = {"appId": app_id, "name": "hits", "fields": [{"name": "n", "type": "integer"}]}
    data_of(await client.post("/api/v1/datasets", json=body, headers=owner.headers))
    return app_id


def _semver(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split("."))


async def test_concurrent_publishes_of_different_bumps_each_build_on_the_last(
    client: AsyncClient,
) -> None:
    """Three publishes at once (minor, major, patch) after 1.0.0: each one bumps the version
    the one before it published, so `latest` ends on the highest version and never moves back.
    On SQLite all three used to read 1.0.0, publish 1.1.0, 2.0.0 and 1.0.1, and leave `latest`
    on whichever committed last (1.0.1, below 2.0.0)."""
    user = await register(client)
    app_id = await new_app(client, user.headers)
    await new_api(client, user.headers, app_id, "ping")
    url = f"/api/v1/apps/{app_id}/versions"
    data_of(await client.post(url, json={"bump": "major"}, headers=user.headers))
    responses = await asyncio.gather(
        *(
            client.post(url, json={"bump": bump}, headers=user.headers)
            for bump in ("minor", "major", "patch")
        )
    )
    results = [data_of(response) for response in responses]
    published = sorted((r["version"] for r in results), key=_semver)
    previous = sorted((r["previousVersion"] for r in results), key=_semver)
    assert previous == ["1.0.0", *published[:-1]]  # a chain: each built on the one before
    app = data_of(await client.get(f"/api/v1/apps/{app_id}", headers=user.headers))
    assert app["latestVersion"] == published[-1]
    latest = data_of(await client.get(f"{url}/latest", headers=user.headers))
    assert latest["version"] == published[-1]


async def test_a_snapshot_cannot_pin_a_callee_version_that_is_not_published(
    client: AsyncClient,
) -> None:
    """A `callApi` pinned to 2.0.0 priced nothing for its callee when 1.0.0 was published; once
    2.0.0 was published, calls to 1.0.0 ran 2.0.0's steps for 1.0.0's price — unpaid, for as
    long as 1.0.0 lives. Publishing refuses such a pin; a pin to the version being published
    (or to a published one) is priced and accepted."""
    owner = await register(client)
    app_id = await _app_with_hits(client, owner)
    await new_api(client, owner.headers, app_id, "inner", price=1, steps=_counts(1))
    pin = {"id": "call", "type": "callApi", "api": "inner", "version": "2.0.0"}
    wrapper = await new_api(client, owner.headers, app_id, "wrapper", price=3, steps=[pin])
    before = await app_state(client, owner.headers, app_id)
    url = f"/api/v1/apps/{app_id}/versions"
    refused = await client.post(url, json={"bump": "major"}, headers=owner.headers)
    assert assert_error(refused, 400, "invalid_definition")["errors"] == [
        {
            "field": "apis.wrapper.steps",
            "message": "callApi pins version 2.0.0, which is not published",
        }
    ]
    assert await app_state(client, owner.headers, app_id) == before  # nothing published
    # Nested in a control step, the pin is found too.
    nested = {"id": "each", "type": "forEach", "items": [1], "maxIterations": 1, "steps": [pin]}
    api_url = f"/api/v1/apps/{app_id}/apis/{wrapper}"
    data_of(await client.patch(api_url, json={"steps": [nested]}, headers=owner.headers))
    refused = await client.post(url, json={"bump": "major"}, headers=owner.headers)
    assert_error(refused, 400, "invalid_definition")
    # Pinned to the version this publish creates, then to a published one: both priced.
    own = {**pin, "version": "1.0.0"}
    data_of(await client.patch(api_url, json={"steps": [own]}, headers=owner.headers))
    assert (
        data_of(await client.post(url, json={"bump": "major"}, headers=owner.headers))["version"]
        == "1.0.0"
    )
    v1 = data_of(await client.get(f"{url}/1.0.0", headers=owner.headers))
    assert v1["snapshot"]["apis"]["wrapper"]["cost"] == 1
    result = data_of(await client.post(url, json={"bump": "patch"}, headers=owner.headers))
    assert result["version"] == "1.0.1"


async def test_every_builder_route_answers_another_workspace_s_ids_with_404(
    client: AsyncClient,
) -> None:
    """An outsider (owner of their own workspace) gets 404 on each route that names another
    tenant's app, never a 403 that confirms it exists, and nothing changes."""
    owner, outsider = await register(client), await register(client)
    app_id = await new_app(client, owner.headers, "Private", secrets={"token": "s3cr3t-value"})
    api_id = await new_api(client, owner.headers, app_id, "ping", group="g")
    data_of(
        await client.post(
            f"/api/v1/apps/{app_id}/versions", json={"bump": "major"}, headers=owner.headers
        )
    )
    before = await app_state(client, owner.headers, app_id)
    base = f"/api/v1/apps/{app_id}"
    requests: list[tuple[str, str, dict[str, Any] | None]] = [
        ("GET", base, None),
        ("PATCH", base, {"name": "Mine", "secrets": {"token": "x"}}),
        ("DELETE", base, None),
        ("GET", f"{base}/apis", None),
        ("GET", f"{base}/api-groups", None),
        ("POST", f"{base}/apis", {"api": "pong"}),
        ("GET", f"{base}/apis/{api_id}", None),
        ("PATCH", f"{base}/apis/{api_id}", {"name": "x"}),
        ("DELETE", f"{base}/apis/{api_id}", None),
        ("GET", f"{base}/versions", None),
        ("POST", f"{base}/versions", {"bump": "major"}),
        ("GET", f"{base}/versions/1.0.0", None),
        ("GET", f"{base}/versions/latest", None),
        ("PATCH", f"{base}/versions/1.0.0", {"deprecated": 1}),
        ("PUT", f"{base}/versions/1.0.0", {"notes": "x"}),
        ("DELETE", f"{base}/versions/1.0.0", None),
        ("GET", f"{base}/export", None),
        ("GET", f"{base}/export?format=yaml", None),
    ]
    for method, path, body in requests:
        response = await client.request(method, path, json=body, headers=outsider.headers)
        assert_error(response, 404, "app_not_found")
        assert "s3cr3t" not in response.text
    # The owner's API id through the outsider's own app: not found either.
    own_app = await new_app(client, outsider.headers, "Own")
    response = await client.get(f"/api/v1/apps/{own_app}/apis/{api_id}", headers=outsider.headers)
    assert_error(response, 404, "api_not_found")
    assert await app_state(client, owner.headers, app_id) == before


async def test_a_yaml_export_keeps_text_holding_a_next_line_character(client: AsyncClient) -> None:
    """U+0085 (NEL, what cp1252's "…" becomes when read as Latin-1) was written raw into the
    YAML, and read back as a line break: the imported app's text differed from the source's."""
    alice, bob = await register(client), await register(client)
    text = "Read more\x85 now"
    app_id = await new_app(
        client, alice.headers, "Nel", description=text, config={"note": text, "k\x85x": "v"}
    )
    await new_api(client, alice.headers, app_id, "ping", description=text, group=text[:9])
    exported = await client.get(f"/api/v1/apps/{app_id}/export?format=yaml", headers=alice.headers)
    assert exported.status_code == 200
    imported = await client.post(
        "/api/v1/apps/import",
        content=exported.content,
        headers={**bob.headers, "Content-Type": "application/yaml"},
    )
    copy_id = data_of(imported)["id"]
    copy = data_of(await client.get(f"/api/v1/apps/{copy_id}", headers=bob.headers))
    assert copy["description"] == text
    assert copy["config"] == {"note": text, "k\x85x": "v"}
    page = data_of(await client.get(f"/api/v1/apps/{copy_id}/apis", headers=bob.headers))
    assert [(a["description"], a["group"]) for a in page["list"]] == [(text, text[:9])]
