"""Fifth review of versions: `latest` is an alias that a publish moves, so the `ETag` it is
read with names the version as well as its revision, and an `If-Match` read before a publish
never passes for the version published after it — over HTTP, on both backends."""

from httpx import AsyncClient

from tests.e2e._apps import new_api, new_app, set_step
from tests.e2e._workspaces import assert_error, data_of
from tests.factories import register


async def test_an_if_match_read_through_latest_never_passes_for_the_next_version(
    client: AsyncClient,
) -> None:
    """Every new version starts at revision 1: `GET .../versions/latest` answered `"1"` for
    1.0.0, and after 1.0.1 was published a `PATCH .../versions/latest` with that `If-Match`
    deprecated 1.0.1 — a version the client never read."""
    owner = await register(client)
    h = owner.headers
    app_id = await new_app(client, h)
    await new_api(client, h, app_id, "hello", steps=[set_step("a", 1)])
    url = f"/api/v1/apps/{app_id}/versions"
    data_of(await client.post(url, json={"bump": "minor"}, headers=h))
    read = await client.get(f"{url}/latest", headers=h)
    assert data_of(read)["version"] == "1.0.0"
    tag = read.headers["ETag"]
    assert tag == '"1.0.0;1"'
    assert (await client.get(f"{url}/1.0.0", headers=h)).headers["ETag"] == '"1"'

    data_of(await client.post(url, json={"bump": "patch"}, headers=h))
    stale = await client.patch(
        f"{url}/latest", json={"deprecated": 1}, headers={**h, "If-Match": tag}
    )
    assert assert_error(stale, 412, "precondition_failed")["etag"] == '"1.0.1;1"'
    # A bare revision says nothing of which version it was read from: it never matches here.
    bare = await client.patch(
        f"{url}/latest", json={"deprecated": 1}, headers={**h, "If-Match": '"1"'}
    )
    assert_error(bare, 412, "precondition_failed")
    listed = data_of(await client.get(url, headers=h))["list"]
    assert {v["version"]: v["deprecated"] for v in listed} == {"1.0.0": 0, "1.0.1": 0}

    current = (await client.get(f"{url}/latest", headers=h)).headers["ETag"]
    assert current == '"1.0.1;1"'
    done = await client.patch(
        f"{url}/latest", json={"deprecated": 1}, headers={**h, "If-Match": current}
    )
    assert (data_of(done)["version"], data_of(done)["deprecated"]) == ("1.0.1", 1)
    assert done.headers["ETag"] == '"1.0.1;2"'
    wildcard = await client.patch(
        f"{url}/latest", json={"deprecated": 0}, headers={**h, "If-Match": "*"}
    )
    assert data_of(wildcard)["revision"] == 3
    # The exact label keeps the plain revision as its ETag.
    exact = await client.patch(
        f"{url}/1.0.1", json={"deprecated": 1}, headers={**h, "If-Match": '"3"'}
    )
    assert exact.headers["ETag"] == '"4"'
