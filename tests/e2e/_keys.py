"""Helpers for the key and subscription flows: a small "Notes" app, subscriptions, keys, calls."""

import asyncio
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from fastapi import FastAPI
from httpx import AsyncClient, Response
from sqlalchemy import event

from tests.e2e._apps import new_api, new_app
from tests.e2e._workspaces import data_of
from tests.factories import User

PRICE = 100  # above the seeded step costs: these tests are about access, not pricing
NOTE_FIELDS = [{"name": "text", "type": "string", "required": True}]
TEXT = [{"name": "text", "type": "string", "required": True, "max": 200}]
USER = [{"name": "user", "type": "string", "required": True, "max": 64}]
TOKEN_ONLY = {"requireToken": True, "mode": "none"}

# api -> (params, steps, auth)
NOTES_APIS: dict[str, tuple[list[Any], list[Any], dict[str, Any] | None]] = {
    "echo": (TEXT, [{"id": "echo", "type": "set", "value": {"expr": "args.text"}}], None),
    "addNote": (
        TEXT,
        [
            {
                "id": "note",
                "type": "insert",
                "collection": "notes",
                "data": {"text": {"expr": "args.text"}},
            }
        ],
        None,
    ),
    "listNotes": (
        [],
        [{"id": "notes", "type": "getMany", "collection": "notes", "pageSize": 50}],
        None,
    ),
    "signIn": (
        USER,
        [{"id": "session", "type": "jwtSign", "sub": {"expr": "args.user"}, "expiresIn": 600}],
        None,
    ),
    "whoAmI": ([], [{"id": "me", "type": "set", "value": {"expr": "token.sub"}}], TOKEN_ONLY),
}


async def notes_app(
    client: AsyncClient, owner: User, *, visibility: str = "private", publish: bool = True
) -> str:
    """An app of `owner`'s personal workspace with a `notes` collection and `NOTES_APIS`,
    published once (consumers call `latest`)."""
    app_id = await new_app(client, owner.headers, "Notes", visibility=visibility)
    body = {"appId": app_id, "name": "notes", "fields": NOTE_FIELDS}
    data_of(await client.post("/api/v1/datasets", json=body, headers=owner.headers))
    for api, (params, steps, auth) in NOTES_APIS.items():
        extra: dict[str, Any] = {"params": params, "steps": steps, "price": PRICE}
        if auth is not None:
            extra["auth"] = auth
        await new_api(client, owner.headers, app_id, api, **extra)
    if publish:
        response = await client.post(
            f"/api/v1/apps/{app_id}/versions",
            json={"bump": "minor", "notes": "first"},
            headers=owner.headers,
        )
        data_of(response)
    return app_id


async def subscribe(client: AsyncClient, headers: dict[str, str], app_id: str) -> str:
    response = await client.post("/api/v1/subscriptions", json={"appId": app_id}, headers=headers)
    subscription_id: str = data_of(response)["id"]
    return subscription_id


async def create_key(client: AsyncClient, headers: dict[str, str], **body: Any) -> tuple[str, str]:
    """(key id, secret) of a new key; `body` is the create request (`type`, `appId`, ...)."""
    body.setdefault("name", f"{body['type']} key")
    data = data_of(await client.post("/api/v1/api-keys", json=body, headers=headers))
    return data["id"], data["key"]


async def app_key(client: AsyncClient, user: User, app_id: str, **body: Any) -> tuple[str, str]:
    """Enable `app_id` in `user`'s personal workspace (if needed) and create an `app-` key."""
    listed = data_of(await client.get("/api/v1/subscriptions?pageSize=100", headers=user.headers))
    if app_id not in {s["appId"] for s in listed["list"]}:
        await subscribe(client, user.headers, app_id)
    return await create_key(client, user.headers, type="app", appId=app_id, **body)


async def call(
    client: AsyncClient,
    secret: str,
    app_id: str,
    api: str,
    args: dict[str, Any] | None = None,
    *,
    version: str = "latest",
    headers: dict[str, str] | None = None,
) -> Response:
    body = {"appId": app_id, "api": api, "version": version, "args": args or {}}
    return await client.post(
        "/api/v1/invocations", json=body, headers={"X-Api-Key": secret, **(headers or {})}
    )


async def keys_of(client: AsyncClient, headers: dict[str, str]) -> dict[str, dict[str, Any]]:
    """id -> key as listed for the workspace of `headers`."""
    page = data_of(await client.get("/api/v1/api-keys?pageSize=100", headers=headers))
    return {k["id"]: k for k in page["list"]}


async def refused_within(
    client: AsyncClient,
    secret: str,
    app_id: str,
    api: str,
    args: dict[str, Any],
    *,
    seconds: float,
) -> tuple[Response, float]:
    """Call until the call is refused; the refusal and how long it took (fails after `seconds`)."""
    started = time.monotonic()
    while True:
        response = await call(client, secret, app_id, api, args)
        elapsed = time.monotonic() - started
        if response.status_code != 200 or elapsed > seconds:
            return response, elapsed
        await asyncio.sleep(0.05)


@contextmanager
def counting(app: FastAPI, table: str) -> Iterator[list[str]]:
    """Statements sent to the database that mention `table`."""
    seen: list[str] = []

    def listener(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if table in statement:
            seen.append(statement)

    engine = app.state.engine.sync_engine
    event.listen(engine, "before_cursor_execute", listener)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", listener)
