"""`/api/v1/admin/users`: listing and search, disable/enable, delete with its cascade, and the
rules that keep administrators from editing user data or locking everyone out."""

from typing import Any

import pytest
from fastapi import FastAPI
from httpx import AsyncClient
from sqlalchemy import func, select

from apiforge.accounts.models import Account, AppSetting, LoginSession, RefreshToken, UserSetting
from apiforge.core.db import unit_of_work
from apiforge.workspaces.models import Membership, Role, Workspace
from tests.factories import PASSWORD, User, make_admin, register

USERS = "/api/v1/admin/users"


async def _account(app: FastAPI, account_id: str) -> Account | None:
    async with unit_of_work(app.state.sessionmaker) as session:
        return await session.get(Account, account_id)


async def _count(app: FastAPI, model: Any, *where: Any) -> int:
    async with unit_of_work(app.state.sessionmaker) as session:
        stmt = select(func.count()).select_from(model).where(*where)
        return int(await session.scalar(stmt) or 0)


async def _login(client: AsyncClient, email: str) -> Any:
    return await client.post("/api/v1/auth/login", json={"email": email, "password": PASSWORD})


def _emails(response: Any) -> list[str]:
    assert response.status_code == 200, response.text
    return [item["email"] for item in response.json()["data"]["list"]]


# --- access ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "suffix", "body"),
    [
        ("GET", "", None),
        ("GET", "/{id}", None),
        ("PATCH", "/{id}", {"status": "disabled"}),
        ("DELETE", "/{id}", None),
    ],
)
async def test_anonymous_is_401_and_non_admin_is_403(
    app: FastAPI, client: AsyncClient, method: str, suffix: str, body: dict[str, str] | None
) -> None:
    victim = await register(client)
    url = USERS + suffix.format(id=victim.account_id)
    anonymous = await client.request(method, url, json=body)
    assert anonymous.status_code == 401
    assert anonymous.json()["data"]["error"] == "unauthenticated"
    user = await register(client)
    refused = await client.request(method, url, json=body, headers=user.headers)
    assert refused.status_code == 403
    assert refused.json()["code"] == 403
    assert refused.json()["data"]["error"] == "admin_required"
    account = await _account(app, victim.account_id)
    assert account is not None
    assert account.status == "active"


# --- list and search ------------------------------------------------------------------------


async def test_list_items_have_the_documented_shape(app: FastAPI, client: AsyncClient) -> None:
    admin = await make_admin(app, client)
    user = await register(client, name="Ada")
    response = await client.get(USERS, headers=admin.headers)
    assert response.status_code == 200
    body = response.json()
    assert body["code"] == 200
    assert body["message"] == "success"
    page = body["data"]
    assert (page["totalCount"], page["totalPage"], page["pageNo"], page["pageSize"]) == (
        2,
        1,
        1,
        20,
    )
    items = {item["id"]: item for item in page["list"]}
    item = items[user.account_id]
    assert set(item) == {
        "id",
        "email",
        "name",
        "status",
        "isAdmin",
        "version",
        "createdTime",
        "lastLoginTime",
    }
    assert item["email"] == user.email
    assert item["name"] == "Ada"
    assert item["status"] == "active"
    assert item["isAdmin"] == 0
    assert item["lastLoginTime"] is None  # registered, never signed in with a password
    assert item["createdTime"].endswith("Z")
    assert len(item["createdTime"]) == 20
    assert items[admin.account_id]["isAdmin"] == 1
    assert items[admin.account_id]["lastLoginTime"].endswith("Z")


async def test_search_is_case_insensitive_over_email_and_name(
    app: FastAPI, client: AsyncClient
) -> None:
    admin = await make_admin(app, client)
    await register(client, "grace@example.com", name="Grace Hopper")
    await register(client, "alan@example.com", name="Alan")
    assert _emails(await client.get(USERS, params={"q": "HOPPER"}, headers=admin.headers)) == [
        "grace@example.com"
    ]
    assert _emails(await client.get(USERS, params={"q": "ALAN@"}, headers=admin.headers)) == [
        "alan@example.com"
    ]
    assert _emails(await client.get(USERS, params={"q": "nobody"}, headers=admin.headers)) == []


async def test_search_treats_percent_and_underscore_literally(
    app: FastAPI, client: AsyncClient
) -> None:
    admin = await make_admin(app, client)
    await register(client, "a_b@example.com")
    await register(client, "axb@example.com", name="100% real")
    await register(client, "plain@example.com")
    underscore = await client.get(USERS, params={"q": "a_b"}, headers=admin.headers)
    assert _emails(underscore) == ["a_b@example.com"]
    percent = await client.get(USERS, params={"q": "%"}, headers=admin.headers)
    assert _emails(percent) == ["axb@example.com"]


async def test_injection_looking_search_is_plain_text(app: FastAPI, client: AsyncClient) -> None:
    admin = await make_admin(app, client)
    await register(client)
    for q in ("'; DROP TABLE accounts; --", "<script>alert(1)</script>", "\\", "' OR '1'='1"):
        assert _emails(await client.get(USERS, params={"q": q}, headers=admin.headers)) == []
    assert await _count(app, Account) == 2


async def test_status_filter(app: FastAPI, client: AsyncClient) -> None:
    admin = await make_admin(app, client)
    keep = await register(client, "keep@example.com")
    gone = await register(client, "gone@example.com")
    patched = await client.patch(
        f"{USERS}/{gone.account_id}", json={"status": "disabled"}, headers=admin.headers
    )
    assert patched.status_code == 200
    disabled = await client.get(USERS, params={"status": "disabled"}, headers=admin.headers)
    assert _emails(disabled) == [gone.email]
    active = await client.get(USERS, params={"status": "active"}, headers=admin.headers)
    assert sorted(_emails(active)) == sorted([admin.email, keep.email])


async def test_pagination_and_sorting(app: FastAPI, client: AsyncClient) -> None:
    admin = await make_admin(app, client, "m-admin@example.com")
    for name in ("c", "a", "d", "b"):
        await register(client, f"{name}@example.com")
    await _login(client, "d@example.com")
    params = {"sort": "email", "order": "asc", "pageSize": "2"}
    first = await client.get(USERS, params=params, headers=admin.headers)
    assert _emails(first) == ["a@example.com", "b@example.com"]
    assert first.json()["data"]["totalCount"] == 5
    assert first.json()["data"]["totalPage"] == 3
    third = await client.get(USERS, params={**params, "pageNo": "3"}, headers=admin.headers)
    assert _emails(third) == ["m-admin@example.com"]
    beyond = await client.get(USERS, params={**params, "pageNo": "4"}, headers=admin.headers)
    assert _emails(beyond) == []
    desc = await client.get(USERS, params={"sort": "email", "order": "desc"}, headers=admin.headers)
    assert _emails(desc)[0] == "m-admin@example.com"
    # Never signed in sorts as the oldest login, the same on every backend.
    by_login = await client.get(
        USERS, params={"sort": "lastLoginTime", "order": "desc"}, headers=admin.headers
    )
    assert _emails(by_login)[:2] == ["d@example.com", admin.email]
    by_login_asc = await client.get(
        USERS, params={"sort": "lastLoginTime", "order": "asc"}, headers=admin.headers
    )
    assert _emails(by_login_asc)[-2:] == [admin.email, "d@example.com"]
    newest = await client.get(USERS, params={"sort": "createdTime"}, headers=admin.headers)
    assert len(_emails(newest)) == 5


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"sort": "password_hash"}, "sort"),
        ({"sort": "createdAt"}, "sort"),
        ({"order": "sideways"}, "order"),
        ({"status": "banned"}, "status"),
        ({"status": "'; DROP TABLE accounts; --"}, "status"),
        ({"pageSize": "100000"}, "pageSize"),
        ({"pageNo": "0"}, "pageNo"),
        ({"pageNo": "one"}, "pageNo"),
        ({"pageNo": "²"}, "pageNo"),  # a digit to str.isdigit, not to int()
        ({"pageSize": "¹٣"}, "pageSize"),
        ({"q": "x" * 101}, "q"),
    ],
)
async def test_bad_list_parameters_are_400(
    app: FastAPI, client: AsyncClient, params: dict[str, str], field: str
) -> None:
    admin = await make_admin(app, client)
    response = await client.get(USERS, params=params, headers=admin.headers)
    assert response.status_code == 400
    body = response.json()
    assert body["code"] == 400
    assert field in [error["field"] for error in body["data"]["errors"]]


async def test_get_one_user_and_unknown_id(app: FastAPI, client: AsyncClient) -> None:
    admin = await make_admin(app, client)
    user = await register(client, name="Ada")
    response = await client.get(f"{USERS}/{user.account_id}", headers=admin.headers)
    assert response.status_code == 200
    assert response.json()["data"]["email"] == user.email
    assert "passwordHash" not in response.json()["data"]
    for unknown in ("01aaaaaaaaaaaaaaaaaaaaaaaa", "'; DROP TABLE accounts; --", "x" * 300):
        missing = await client.get(f"{USERS}/{unknown}", headers=admin.headers)
        assert missing.status_code == 404
        assert missing.json()["data"]["error"] == "user_not_found"


# --- PATCH: status only -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "fields"),
    [
        ({"name": "Mallory"}, ["name"]),
        ({"email": "new@example.com"}, ["email"]),
        ({"password": "new password 123"}, ["password"]),
        ({"isAdmin": 1}, ["isAdmin"]),
        ({"status": "disabled", "name": "Mallory"}, ["name"]),
        ({"avatarUrl": "https://x.test/a.png", "locale": "fr"}, ["avatarUrl", "locale"]),
        ({"status": "bogus", "email": "x@example.com"}, ["email"]),
    ],
)
async def test_admin_cannot_edit_user_data(
    app: FastAPI, client: AsyncClient, body: dict[str, Any], fields: list[str]
) -> None:
    admin = await make_admin(app, client)
    user = await register(client, name="Ada")
    before = await _account(app, user.account_id)
    response = await client.patch(f"{USERS}/{user.account_id}", json=body, headers=admin.headers)
    assert response.status_code == 400
    data = response.json()["data"]
    assert data["error"] == "admin_cannot_edit_user_data"
    assert [error["field"] for error in data["errors"]] == fields
    after = await _account(app, user.account_id)
    assert before is not None
    assert after is not None
    assert (after.name, after.email, after.status, after.is_admin, after.password_hash) == (
        before.name,
        before.email,
        before.status,
        before.is_admin,
        before.password_hash,
    )
    assert (await _login(client, user.email)).status_code == 200


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b'{"status": "banned"}', "invalid_input"),
        (b'{"status": "DISABLED"}', "invalid_input"),
        (b'{"status": 0}', "invalid_input"),
        (b'{"status": null}', "invalid_input"),
        (b'{"status": "\'; DROP TABLE accounts; --"}', "invalid_input"),
        (b"{}", "missing_parameters"),
        (b'["status", "disabled"]', "invalid_input"),
        (b'"disabled"', "invalid_input"),
        (b'{"status": "disabled"', "malformed_json"),
        (b"status=disabled", "malformed_json"),
    ],
)
async def test_bad_status_bodies_are_400_and_change_nothing(
    app: FastAPI, client: AsyncClient, content: bytes, reason: str
) -> None:
    admin = await make_admin(app, client)
    user = await register(client)
    response = await client.patch(
        f"{USERS}/{user.account_id}",
        content=content,
        headers={**admin.headers, "Content-Type": "application/json"},
    )
    assert response.status_code == 400
    assert response.json()["data"]["error"] == reason
    account = await _account(app, user.account_id)
    assert account is not None
    assert account.status == "active"
    assert await _count(app, LoginSession, LoginSession.revoked_at.is_not(None)) == 0


async def test_patch_unknown_user_is_404(app: FastAPI, client: AsyncClient) -> None:
    admin = await make_admin(app, client)
    response = await client.patch(
        f"{USERS}/01aaaaaaaaaaaaaaaaaaaaaaaa", json={"status": "disabled"}, headers=admin.headers
    )
    assert response.status_code == 404
    assert response.json()["data"]["error"] == "user_not_found"


# --- disable / enable -------------------------------------------------------------------------


async def test_disable_refuses_login_and_kills_every_token_then_enable_restores_login(
    app: FastAPI, client: AsyncClient
) -> None:
    admin = await make_admin(app, client)
    user = await register(client)
    second = (await _login(client, user.email)).json()["data"]
    assert (await client.get("/api/v1/user/profile", headers=user.headers)).status_code == 200

    response = await client.patch(
        f"{USERS}/{user.account_id}", json={"status": "disabled"}, headers=admin.headers
    )
    assert response.status_code == 200
    assert response.json()["data"]["status"] == "disabled"

    login = await _login(client, user.email)
    assert login.status_code == 403
    assert login.json()["data"]["error"] == "account_disabled"
    for token in (user.access_token, second["accessToken"]):
        profile = await client.get(
            "/api/v1/user/profile", headers={"Authorization": f"Bearer {token}"}
        )
        assert profile.status_code == 401
    for refresh_token in (user.refresh_token, second["refreshToken"]):
        refreshed = await client.post("/api/v1/auth/refresh", json={"refreshToken": refresh_token})
        assert refreshed.status_code == 401
    assert await _count(app, LoginSession, LoginSession.revoked_at.is_(None)) == 1  # the admin's

    again = await client.patch(
        f"{USERS}/{user.account_id}", json={"status": "disabled"}, headers=admin.headers
    )
    assert again.status_code == 200

    enabled = await client.patch(
        f"{USERS}/{user.account_id}", json={"status": "active"}, headers=admin.headers
    )
    assert enabled.status_code == 200
    assert enabled.json()["data"]["status"] == "active"
    fresh = await _login(client, user.email)
    assert fresh.status_code == 200
    headers = {"Authorization": f"Bearer {fresh.json()['data']['accessToken']}"}
    assert (await client.get("/api/v1/user/profile", headers=headers)).status_code == 200
    # Enabling does not resurrect the sessions that disabling ended.
    stale = await client.post("/api/v1/auth/refresh", json={"refreshToken": user.refresh_token})
    assert stale.status_code == 401


async def test_method_override_post_reaches_patch(app: FastAPI, client: AsyncClient) -> None:
    admin = await make_admin(app, client)
    user = await register(client)
    response = await client.post(
        f"{USERS}/{user.account_id}",
        json={"status": "disabled"},
        headers={**admin.headers, "X-HTTP-Method-Override": "PATCH"},
    )
    assert response.status_code == 200
    account = await _account(app, user.account_id)
    assert account is not None
    assert account.status == "disabled"


async def test_admin_cannot_disable_or_delete_themselves(app: FastAPI, client: AsyncClient) -> None:
    admin = await make_admin(app, client)
    url = f"{USERS}/{admin.account_id}"
    disabled = await client.patch(url, json={"status": "disabled"}, headers=admin.headers)
    assert disabled.status_code == 409
    assert disabled.json()["data"]["error"] == "cannot_modify_self"
    deleted = await client.delete(url, headers=admin.headers)
    assert deleted.status_code == 409
    assert deleted.json()["data"]["error"] == "cannot_modify_self"
    account = await _account(app, admin.account_id)
    assert account is not None
    assert account.status == "active"
    assert (await client.get(USERS, headers=admin.headers)).status_code == 200


async def test_an_admin_can_disable_another_admin(app: FastAPI, client: AsyncClient) -> None:
    first = await make_admin(app, client)
    second = await make_admin(app, client)
    response = await client.patch(
        f"{USERS}/{second.account_id}", json={"status": "disabled"}, headers=first.headers
    )
    assert response.status_code == 200
    refused = await client.get(USERS, headers=second.headers)
    assert refused.status_code == 401


# --- delete -----------------------------------------------------------------------------------


async def _give_user_everything(app: FastAPI, client: AsyncClient, user: User, other: User) -> None:
    """Settings, a second session, a membership elsewhere, and a member in its own workspace."""
    assert (
        await client.put("/api/v1/user/settings", json={"theme": "dark"}, headers=user.headers)
    ).status_code == 200
    assert (
        await client.put(
            "/api/v1/user/settings/apps/notes/font", json={"value": "serif"}, headers=user.headers
        )
    ).status_code == 200
    assert (await _login(client, user.email)).status_code == 200
    async with unit_of_work(app.state.sessionmaker) as session:
        session.add(
            Membership(
                workspace_id=other.workspace_id, account_id=user.account_id, role=Role.EDITOR
            )
        )
        session.add(
            Membership(
                workspace_id=user.workspace_id, account_id=other.account_id, role=Role.VIEWER
            )
        )


async def test_delete_removes_the_account_and_everything_it_owns(
    app: FastAPI, client: AsyncClient
) -> None:
    admin = await make_admin(app, client)
    user = await register(client, "leaving@example.com", name="Leaving")
    other = await register(client, "staying@example.com")
    await _give_user_everything(app, client, user, other)
    await client.put("/api/v1/user/settings", json={"mine": 1}, headers=other.headers)

    response = await client.delete(f"{USERS}/{user.account_id}", headers=admin.headers)
    assert response.status_code == 200
    assert response.json() == {"code": 200, "message": "success", "data": {"id": user.account_id}}

    assert await _account(app, user.account_id) is None
    owned = Workspace.owner_id == user.account_id
    assert await _count(app, Workspace, owned) == 0
    assert await _count(app, Workspace, Workspace.id == user.workspace_id) == 0
    assert await _count(app, Membership, Membership.account_id == user.account_id) == 0
    assert await _count(app, Membership, Membership.workspace_id == user.workspace_id) == 0
    assert await _count(app, LoginSession, LoginSession.account_id == user.account_id) == 0
    assert await _count(app, UserSetting, UserSetting.account_id == user.account_id) == 0
    assert await _count(app, AppSetting, AppSetting.account_id == user.account_id) == 0
    # Refresh tokens hang off sessions; only the admin's and the other user's remain.
    assert await _count(app, RefreshToken) == await _count(app, LoginSession)
    # Everyone else is untouched.
    assert await _account(app, other.account_id) is not None
    assert await _count(app, Workspace, Workspace.id == other.workspace_id) == 1
    assert await _count(app, Membership, Membership.workspace_id == other.workspace_id) == 1
    kept = await client.get("/api/v1/user/settings", headers=other.headers)
    assert kept.json()["data"] == {"mine": 1}

    assert (await client.get("/api/v1/user/profile", headers=user.headers)).status_code == 401
    refreshed = await client.post("/api/v1/auth/refresh", json={"refreshToken": user.refresh_token})
    assert refreshed.status_code == 401
    assert (await _login(client, user.email)).status_code == 401
    assert (await client.get(f"{USERS}/{user.account_id}", headers=admin.headers)).status_code == (
        404
    )
    again = await client.delete(f"{USERS}/{user.account_id}", headers=admin.headers)
    assert again.status_code == 404
    assert again.json()["data"]["error"] == "user_not_found"

    back = await register(client, "leaving@example.com")
    assert back.account_id != user.account_id
    assert back.workspace_id != user.workspace_id
    fresh = await client.get("/api/v1/user/settings", headers=back.headers)
    assert fresh.json()["data"] == {}


async def test_deleting_another_admin_is_allowed(app: FastAPI, client: AsyncClient) -> None:
    first = await make_admin(app, client)
    second = await make_admin(app, client)
    response = await client.delete(f"{USERS}/{second.account_id}", headers=first.headers)
    assert response.status_code == 200
    assert await _count(app, Account, Account.is_admin.is_(True)) == 1
