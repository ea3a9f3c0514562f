"""Helpers for the permission and signing flows: a public "Perms" app with one API per mode,
its consumers' keys, and calls as one of the app's end users."""

from dataclasses import dataclass
from typing import Any

from httpx import AsyncClient, Response

from tests.e2e._apps import new_api, new_app
from tests.e2e._keys import PRICE, app_key, call
from tests.e2e._workspaces import data_of
from tests.factories import User, register

SIMPLE_RIGHTS = ["notes:write", "editor"]
ORG_RIGHTS = ["read", "owner"]
ORG_ID = [{"name": "orgId", "type": "string", "max": 128}]


def _auth(mode: str, rights: list[str] | None = None, **target: str) -> dict[str, Any]:
    auth: dict[str, Any] = {"requireToken": mode != "open", "mode": mode, "rights": rights or []}
    if mode == "open":
        auth["mode"] = "none"
    if target:
        auth["target"] = target
    return auth


def _set(step_id: str, expr: str) -> list[dict[str, Any]]:
    return [{"id": step_id, "type": "set", "value": {"expr": expr}}]


# api -> (params, steps, auth)
PERMS_APIS: dict[str, tuple[list[Any], list[Any], dict[str, Any]]] = {
    "signIn": (
        [
            {"name": "user", "type": "string", "required": True, "max": 128},
            {"name": "rights", "type": "array", "default": []},
            {"name": "admin", "type": "boolean", "default": False},
            {"name": "org", "type": "string", "default": ""},
        ],
        [
            {
                "id": "session",
                "type": "jwtSign",
                "sub": {"expr": "args.user"},
                "rights": {"expr": "args.rights"},
                "admin": {"expr": "args.admin"},
                "claims": {"org": {"expr": "args.org"}},
                "expiresIn": 600,
            }
        ],
        _auth("open"),
    ),
    "open": ([], _set("me", "has(token.sub) ? token.sub : 'anonymous'"), _auth("open")),
    "whoAmI": ([], _set("me", "token.sub"), _auth("none")),
    "addNote": (
        [{"name": "text", "type": "string", "required": True, "max": 200}],
        [
            {
                "id": "note",
                "type": "insert",
                "collection": "notes",
                "data": {"text": {"expr": "args.text"}, "author": {"expr": "token.sub"}},
            }
        ],
        _auth("simple", SIMPLE_RIGHTS),
    ),
    "listNotes": (
        [],
        [{"id": "notes", "type": "getMany", "collection": "notes", "pageSize": 50}],
        _auth("open"),
    ),
    "manage": ([], _set("done", "'admin ok'"), _auth("admin")),
    "viaCall": ([], [{"id": "inner", "type": "callApi", "api": "manage"}], _auth("open")),
    "orgRead": (
        ORG_ID,
        _set("org", "args.orgId"),
        _auth("userSystem", ORG_RIGHTS, source="arg", value="orgId"),
    ),
    "orgByToken": (
        [],
        _set("org", "token.org"),
        _auth("userSystem", ["read"], source="token", value="org"),
    ),
    "orgGlobal": (
        [],
        _set("ok", "true"),
        _auth("userSystem", ["read"], source="constant", value="global"),
    ),
}


async def perms_app(client: AsyncClient, owner: User, *, name: str = "Perms") -> str:
    """A public app of `owner`'s personal workspace with a `notes` collection and `PERMS_APIS`,
    published once (consumers call `latest`)."""
    app_id = await new_app(client, owner.headers, name, visibility="public")
    fields = [
        {"name": "text", "type": "string", "required": True},
        {"name": "author", "type": "string"},
    ]
    body = {"appId": app_id, "name": "notes", "fields": fields}
    data_of(await client.post("/api/v1/datasets", json=body, headers=owner.headers))
    for api, (params, steps, auth) in PERMS_APIS.items():
        await new_api(
            client, owner.headers, app_id, api, params=params, steps=steps, auth=auth, price=PRICE
        )
    response = await client.post(
        f"/api/v1/apps/{app_id}/versions",
        json={"bump": "minor", "notes": "first"},
        headers=owner.headers,
    )
    data_of(response)
    return app_id


@dataclass
class Consumer:
    """A workspace that enabled the app, calling it with an `app-` key."""

    client: AsyncClient
    user: User
    app_id: str
    key_id: str
    secret: str

    async def call(self, api: str, token: str | None = None, **args: Any) -> Response:
        headers = {"Authorization": f"Bearer {token}"} if token is not None else None
        return await call(self.client, self.secret, self.app_id, api, args, headers=headers)

    async def sign_in(self, user: str, **claims: Any) -> str:
        """An end-user token issued by the app in this consumer's partition."""
        data = data_of(await self.call("signIn", user=user, **claims))
        token: str = data["session"]["token"]
        return token

    async def notes(self) -> list[dict[str, Any]]:
        page = data_of(await self.call("listNotes"))["notes"]
        notes: list[dict[str, Any]] = page["list"]
        return notes


async def consumer(client: AsyncClient, app_id: str) -> Consumer:
    user = await register(client)
    key_id, secret = await app_key(client, user, app_id)
    return Consumer(client, user, app_id, key_id, secret)


async def grant(
    client: AsyncClient,
    headers: dict[str, str],
    app_id: str,
    user_id: str,
    target: str,
    rights: list[str],
) -> Response:
    body = {"userId": user_id, "target": target, "rights": rights}
    return await client.post(f"/api/v1/apps/{app_id}/user-rights", json=body, headers=headers)


async def user_rights(
    client: AsyncClient, headers: dict[str, str], app_id: str, query: str = ""
) -> list[dict[str, Any]]:
    response = await client.get(
        f"/api/v1/apps/{app_id}/user-rights?pageSize=100{query}", headers=headers
    )
    rows: list[dict[str, Any]] = data_of(response)["list"]
    return rows
