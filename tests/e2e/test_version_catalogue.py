"""A public app's published versions, listed for the workspaces that call it: which exist,
which is `latest`, which are deprecated and when they stop answering; never `dev`, a private
app's, who published them, or a version's snapshot."""

from datetime import UTC, datetime, timedelta

from httpx import AsyncClient

from tests.e2e._keys import notes_app, subscribe
from tests.e2e._workspaces import assert_error, data_of
from tests.factories import register


async def test_a_consumer_lists_a_public_apps_versions_and_their_deprecation(
    client: AsyncClient,
) -> None:
    owner, consumer = await register(client), await register(client)
    app_id = await notes_app(client, owner, visibility="public")
    await subscribe(client, consumer.headers, app_id)
    data_of(
        await client.post(
            f"/api/v1/apps/{app_id}/versions",
            json={"bump": "minor", "notes": "Faster echo"},
            headers=owner.headers,
        )
    )
    sunset = (datetime.now(UTC) + timedelta(days=30)).replace(microsecond=0)
    data_of(
        await client.patch(
            f"/api/v1/apps/{app_id}/versions/1.0.0",
            json={"deprecated": True, "sunset": sunset.isoformat().replace("+00:00", "Z")},
            headers=owner.headers,
        )
    )
    url = f"/api/v1/apps/{app_id}/versions"

    mine = data_of(await client.get(url, headers=owner.headers))
    theirs = data_of(await client.get(url, headers=consumer.headers))
    assert theirs["totalCount"] == mine["totalCount"] == 2
    rows = {row["version"]: row for row in theirs["list"]}
    assert [row["version"] for row in theirs["list"]] == ["1.1.0", "1.0.0"]
    assert rows["1.1.0"]["latest"] == 1
    assert rows["1.1.0"]["notes"] == "Faster echo"
    assert rows["1.0.0"]["deprecated"] == 1
    assert rows["1.0.0"]["sunset"] == sunset.isoformat().replace("+00:00", "Z")
    # Who published is the app's workspace's business; the rest is the same for both.
    assert all(row["publishedBy"] is None for row in theirs["list"])
    assert all(row["publishedBy"] for row in mine["list"])
    for row in mine["list"]:
        assert {**row, "publishedBy": None} == rows[row["version"]]
    # The list's sorts and paging apply to consumers as to the owner.
    oldest = data_of(await client.get(f"{url}?order=asc&pageSize=1", headers=consumer.headers))
    assert [row["version"] for row in oldest["list"]] == ["1.0.0"]
    # A snapshot (every API's steps) stays the owner's: one version is not readable.
    for version in ("1.0.0", "latest"):
        response = await client.get(f"{url}/{version}", headers=consumer.headers)
        assert_error(response, 404, "app_not_found")


async def test_strangers_never_list_a_private_apps_versions_nor_change_a_public_ones(
    client: AsyncClient,
) -> None:
    owner, stranger = await register(client), await register(client)
    private_id = await notes_app(client, owner)
    public_id = await notes_app(client, owner, visibility="public")

    response = await client.get(f"/api/v1/apps/{private_id}/versions", headers=stranger.headers)
    assert_error(response, 404, "app_not_found")  # like an unknown id: ids never leak
    for bad in ("nope", "x" * 300, "' OR 1=1 --"):
        response = await client.get(f"/api/v1/apps/{bad}/versions", headers=stranger.headers)
        assert response.status_code == 404, response.text
    # Listing is all a stranger may do with a public app's versions.
    response = await client.post(
        f"/api/v1/apps/{public_id}/versions", json={"bump": "major"}, headers=stranger.headers
    )
    assert_error(response, 404, "app_not_found")
    response = await client.patch(
        f"/api/v1/apps/{public_id}/versions/1.0.0",
        json={"deprecated": True},
        headers=stranger.headers,
    )
    assert_error(response, 404, "app_not_found")
    listed = data_of(await client.get(f"/api/v1/apps/{public_id}/versions", headers=owner.headers))
    assert [(row["version"], row["deprecated"]) for row in listed["list"]] == [("1.0.0", 0)]


async def test_an_app_made_private_stops_listing_its_versions(client: AsyncClient) -> None:
    owner, consumer = await register(client), await register(client)
    app_id = await notes_app(client, owner, visibility="public")
    await subscribe(client, consumer.headers, app_id)
    url = f"/api/v1/apps/{app_id}/versions"
    assert data_of(await client.get(url, headers=consumer.headers))["totalCount"] == 1
    data_of(
        await client.patch(
            f"/api/v1/apps/{app_id}", json={"visibility": "private"}, headers=owner.headers
        )
    )
    assert_error(await client.get(url, headers=consumer.headers), 404, "app_not_found")
