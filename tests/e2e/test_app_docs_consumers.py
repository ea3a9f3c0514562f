"""A public app's generated docs for the workspaces that call it: its published versions only,
without the builder's cost; private apps and `dev` stay the owner's."""

from httpx import AsyncClient

from tests.e2e._apps import new_api
from tests.e2e._keys import PRICE, notes_app, subscribe
from tests.e2e._workspaces import assert_error, data_of
from tests.factories import register


async def test_consumers_read_a_public_apps_published_docs(client: AsyncClient) -> None:
    owner, consumer = await register(client), await register(client)
    app_id = await notes_app(client, owner, visibility="public")
    await subscribe(client, consumer.headers, app_id)
    # An API added after the publish is `dev` only: consumers must not see it.
    await new_api(client, owner.headers, app_id, "draftOnly")

    mine = await client.get(f"/api/v1/apps/{app_id}/openapi.json", headers=owner.headers)
    theirs = await client.get(f"/api/v1/apps/{app_id}/openapi.json", headers=consumer.headers)
    assert mine.status_code == theirs.status_code == 200, theirs.text
    own_doc, doc = mine.json(), theirs.json()
    assert doc["info"]["version"] == own_doc["info"]["version"] == "1.0.0"
    assert list(doc["paths"]) == list(own_doc["paths"])
    assert "/api/v1/invocations#draftOnly" not in doc["paths"]
    echo = doc["paths"]["/api/v1/invocations#echo"]["post"]
    assert echo["x-price"] == PRICE
    assert "x-cost" not in echo  # what the builder pays the platform stays the builder's
    assert "x-cost" in own_doc["paths"]["/api/v1/invocations#echo"]["post"]
    # The same version named explicitly, and the HTML page.
    pinned = await client.get(
        f"/api/v1/apps/{app_id}/openapi.json?version=1.0.0", headers=consumer.headers
    )
    assert pinned.json() == doc
    page = await client.get(f"/api/v1/apps/{app_id}/docs", headers=consumer.headers)
    assert page.status_code == 200
    assert "echo" in page.text
    assert "draftOnly" not in page.text


async def test_consumers_never_read_dev_or_private_docs(client: AsyncClient) -> None:
    owner, stranger = await register(client), await register(client)
    public_id = await notes_app(client, owner, visibility="public")
    private_id = await notes_app(client, owner)
    unpublished_id = await notes_app(client, owner, visibility="public", publish=False)

    for query in ("?version=dev", ""):
        response = await client.get(
            f"/api/v1/apps/{unpublished_id}/openapi.json{query}", headers=stranger.headers
        )
        assert_error(response, 404, "version_not_found")
    response = await client.get(
        f"/api/v1/apps/{public_id}/openapi.json?version=dev", headers=stranger.headers
    )
    assert_error(response, 404, "version_not_found")
    for path in ("openapi.json", "docs", "openapi.json?version=1.0.0"):
        response = await client.get(f"/api/v1/apps/{private_id}/{path}", headers=stranger.headers)
        assert_error(response, 404, "app_not_found")
    # The owner still reads dev before any publish (the default there).
    response = await client.get(
        f"/api/v1/apps/{unpublished_id}/openapi.json", headers=owner.headers
    )
    assert response.status_code == 200
    assert response.json()["info"]["version"] == "dev"


async def test_an_app_made_private_stops_showing_its_docs(client: AsyncClient) -> None:
    owner, consumer = await register(client), await register(client)
    app_id = await notes_app(client, owner, visibility="public")
    await subscribe(client, consumer.headers, app_id)
    url = f"/api/v1/apps/{app_id}/openapi.json"
    assert (await client.get(url, headers=consumer.headers)).status_code == 200
    response = await client.patch(
        f"/api/v1/apps/{app_id}", json={"visibility": "private"}, headers=owner.headers
    )
    data_of(response)
    assert_error(await client.get(url, headers=consumer.headers), 404, "app_not_found")
