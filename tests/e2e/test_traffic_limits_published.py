"""Traffic limits of APIs that live on in published versions after leaving `dev`: settable, and
the document `GET` answers can always be sent back with `PUT`."""

import pytest
from httpx import AsyncClient

from tests.e2e._apps import apis_of
from tests.e2e._keys import call
from tests.e2e._traffic import limited_app, set_limits
from tests.e2e._workspaces import assert_error, data_of
from tests.factories import register

pytestmark = pytest.mark.anyio


async def test_limits_of_an_api_deleted_from_dev_stay_settable(client: AsyncClient) -> None:
    owner = await register(client)
    app_id, secret = await limited_app(client, owner)
    url = f"/api/v1/apps/{app_id}/traffic-limits"
    await set_limits(client, owner, app_id, apis={"other": {"keyPerMinute": 1}})
    other = (await apis_of(client, owner.headers, app_id))["other"]
    deleted = await client.delete(
        f"/api/v1/apps/{app_id}/apis/{other['id']}", headers=owner.headers
    )
    assert deleted.status_code in (200, 204), deleted.text

    # The published version still answers `other`, under its limit.
    assert (await call(client, secret, app_id, "other", {"text": "a"})).status_code == 200
    assert_error(
        await call(client, secret, app_id, "other", {"text": "a"}), 429, "too_many_requests"
    )

    # What GET answers goes back unchanged, and the API's limit can still be changed.
    document = data_of(await client.get(url, headers=owner.headers))
    body = {k: v for k, v in document.items() if k not in ("appId", "updatedTime", "version")}
    assert (await client.put(url, json=body, headers=owner.headers)).status_code == 200
    changed = await set_limits(client, owner, app_id, apis={"other": {"keyPerMinute": 50}})
    assert changed["apis"]["other"]["keyPerMinute"] == 50

    # A name in neither `dev` nor any published version is still a typo.
    refused = await client.put(
        url, json={"apis": {"othre": {"keyPerMinute": 1}}}, headers=owner.headers
    )
    assert_error(refused, 400, "invalid_input")
    assert refused.json()["data"]["errors"] == [{"field": "apis.othre", "message": "no such API"}]
    kept = data_of(await client.get(url, headers=owner.headers))
    assert kept["apis"]["other"]["keyPerMinute"] == 50
