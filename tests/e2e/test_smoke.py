from httpx import AsyncClient

from tests.factories import register


async def test_register_then_read_profile(client: AsyncClient) -> None:
    user = await register(client, name="Ada")
    response = await client.get("/api/v1/user/profile", headers=user.headers)
    assert response.status_code == 200
    body = response.json()
    assert body["code"] == 200
    assert body["message"] == "success"
    assert body["data"]["email"] == user.email
    assert body["data"]["isAdmin"] == 0
    assert body["data"]["createdTime"].endswith("Z")
    # Times are named as on every other resource (and the admin's view of the same account).
    assert {"createdTime", "updatedTime", "lastLoginTime"} <= set(body["data"])
    assert not {"createdAt", "updatedAt", "lastLoginAt"} & set(body["data"])
    assert "X-Request-ID" in response.headers
