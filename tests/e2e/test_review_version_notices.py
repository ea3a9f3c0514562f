"""What a deprecated version tells its callers, and what a publish tells its builder.

Calls to a deprecated version carry `Deprecation: @<unix seconds>` (RFC 9745, the moment it was
deprecated) and `Link`s a client can follow: the version's docs page (`rel="deprecation"`) and
the latest version's (`rel="successor-version"`, RFC 5829). A publish names each API whose
price or cost changed, with the old and the new amount. Over HTTP, on both backends."""

import re
import time
from typing import Any

from fastapi import FastAPI
from httpx import AsyncClient, Response
from sqlalchemy import select, update

from apiforge.builder.models import AppVersion
from apiforge.core.db import unit_of_work
from tests.e2e._apps import apis_of
from tests.e2e._keys import PRICE, call, create_key, notes_app
from tests.e2e._workspaces import data_of
from tests.factories import make_admin, register

LINK = re.compile(r'<([^>]+)>; rel="([^"]+)"; type="text/html"')


def _docs(app_id: str, version: str) -> str:
    return f"/api/v1/apps/{app_id}/docs?version={version}"


def _links(response: Response) -> dict[str, str]:
    """rel -> target of the answer's `Link` header."""
    return {rel: target for target, rel in LINK.findall(response.headers.get("link", ""))}


def _deprecated_at(response: Response) -> int:
    match = re.fullmatch(r"@(-?\d+)", response.headers["deprecation"])
    assert match is not None, response.headers["deprecation"]
    return int(match[1])


async def _deprecate(
    client: AsyncClient, headers: dict[str, str], app_id: str, version: str, flag: int = 1
) -> None:
    url = f"/api/v1/apps/{app_id}/versions/{version}"
    data_of(await client.patch(url, json={"deprecated": flag}, headers=headers))


async def _publish(client: AsyncClient, headers: dict[str, str], app_id: str) -> dict[str, Any]:
    url = f"/api/v1/apps/{app_id}/versions"
    result: dict[str, Any] = data_of(
        await client.post(url, json={"bump": "patch"}, headers=headers)
    )
    return result


async def test_a_deprecated_version_is_dated_and_links_its_docs_and_its_successor(
    client: AsyncClient,
) -> None:
    owner = await register(client)
    app_id = await notes_app(client, owner, visibility="public")  # 1.0.0
    await _publish(client, owner.headers, app_id)  # 1.0.1
    _, ws = await create_key(client, owner.headers, type="ws", role="admin")

    before = int(time.time())
    await _deprecate(client, owner.headers, app_id, "1.0.0")
    after = int(time.time())
    called = await call(client, ws, app_id, "echo", {"text": "hi"}, version="1.0.0")
    assert data_of(called) == {"echo": "hi"}
    since = _deprecated_at(called)
    assert before <= since <= after
    assert called.headers["link"] == (
        f'<{_docs(app_id, "1.0.0")}>; rel="deprecation"; type="text/html", '
        f'<{_docs(app_id, "1.0.1")}>; rel="successor-version"; type="text/html"'
    )
    latest = await call(client, ws, app_id, "echo", {"text": "hi"})
    assert {"deprecation", "link"}.isdisjoint(latest.headers)

    # Both links lead to a page: for the owner, and for any workspace (the app is public).
    consumer = await register(client)
    for headers in (owner.headers, consumer.headers):
        for rel, version in (("deprecation", "1.0.0"), ("successor-version", "1.0.1")):
            page = await client.get(_links(called)[rel], headers=headers)
            assert page.status_code == 200, page.text
            assert page.headers["content-type"].startswith("text/html")
            assert f"<code>{version}</code>" in page.text

    # A newer publish becomes the successor; the deprecation keeps its date.
    await _publish(client, owner.headers, app_id)  # 1.0.2
    called = await call(client, ws, app_id, "echo", {"text": "hi"}, version="1.0.0")
    assert _deprecated_at(called) == since
    assert _links(called) == {
        "deprecation": _docs(app_id, "1.0.0"),
        "successor-version": _docs(app_id, "1.0.2"),
    }

    # `latest` deprecated itself has nothing newer to name; its link names its own number.
    await _deprecate(client, owner.headers, app_id, "1.0.2")
    for version in ("latest", "1.0.2"):
        called = await call(client, ws, app_id, "echo", {"text": "hi"}, version=version)
        assert _links(called) == {"deprecation": _docs(app_id, "1.0.2")}
        assert _deprecated_at(called) >= since

    # Undeprecated: neither header; deprecated again: dated anew.
    await _deprecate(client, owner.headers, app_id, "1.0.0", 0)
    called = await call(client, ws, app_id, "echo", {"text": "hi"}, version="1.0.0")
    assert {"deprecation", "link"}.isdisjoint(called.headers)
    await _deprecate(client, owner.headers, app_id, "1.0.0")
    called = await call(client, ws, app_id, "echo", {"text": "hi"}, version="1.0.0")
    assert since <= _deprecated_at(called) <= int(time.time())


async def test_a_deprecation_without_its_moment_is_dated_by_the_publish(
    app: FastAPI, client: AsyncClient
) -> None:
    """A version deprecated by the release before `deprecated_at` existed (migration 0019 backs
    the old ones with their publish time; the old release may still deprecate one meanwhile)."""
    owner = await register(client)
    app_id = await notes_app(client, owner)
    await _publish(client, owner.headers, app_id)
    _, ws = await create_key(client, owner.headers, type="ws", role="admin")
    where = (AppVersion.app_id == app_id, AppVersion.version == "1.0.0")
    async with unit_of_work(app.state.sessionmaker) as session:
        await session.execute(
            update(AppVersion).where(*where).values(deprecated=True, deprecated_at=None)
        )
        published = await session.scalar(select(AppVersion.created_at).where(*where))
    assert published is not None
    app.state.engine_state.loader.forget_app(app_id)
    called = await call(client, ws, app_id, "echo", {"text": "hi"}, version="1.0.0")
    assert called.headers["deprecation"] == f"@{int(published.timestamp())}"
    assert "successor-version" in _links(called)


async def test_a_publish_names_each_new_price_and_cost_with_both_amounts(
    app: FastAPI, client: AsyncClient
) -> None:
    owner = await register(client)
    app_id = await notes_app(client, owner)  # 1.0.0, every API at PRICE
    apis = await apis_of(client, owner.headers, app_id)
    url = f"/api/v1/apps/{app_id}/apis/{apis['echo']['id']}"
    data_of(await client.patch(url, json={"price": PRICE + 20}, headers=owner.headers))
    published = await _publish(client, owner.headers, app_id)
    assert published["breaking"] == 0
    assert published["changes"] == [
        {
            "api": "echo",
            "kind": "price_changed",
            "param": "",
            "breaking": 0,
            "message": f"price of API echo changed from {PRICE} to {PRICE + 20} RU",
            "before": PRICE,
            "after": PRICE + 20,
        }
    ]

    # The platform's step prices moved: the APIs using the step cost more, nothing else changed.
    latest = data_of(
        await client.get(f"/api/v1/apps/{app_id}/versions/latest", headers=owner.headers)
    )
    cost = latest["snapshot"]["apis"]["addNote"]["cost"]
    admin = await make_admin(app, client)
    pricing = data_of(await client.get("/api/v1/admin/pricing?pageSize=100", headers=admin.headers))
    insert = {p["stepType"]: p["cost"] for p in pricing["list"]}["insert"]
    response = await client.put(
        "/api/v1/admin/pricing/insert", json={"cost": insert + 1}, headers=admin.headers
    )
    data_of(response)
    changes = (await _publish(client, owner.headers, app_id))["changes"]
    assert changes == [
        {
            "api": "addNote",
            "kind": "cost_changed",
            "param": "",
            "breaking": 0,
            "message": f"cost of API addNote changed from {cost} to {cost + 1} RU",
            "before": cost,
            "after": cost + 1,
        }
    ]


async def test_the_change_schema_shows_the_amounts(app: FastAPI) -> None:
    schema = app.openapi()["components"]["schemas"]["ChangeRead"]
    assert {"before", "after"} <= schema["properties"].keys()
    assert not {"before", "after"} & set(schema.get("required", []))
