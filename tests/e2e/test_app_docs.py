"""Generated docs of an app: `/openapi.json?version=` (OpenAPI 3.1) and the offline HTML page."""

import re
from typing import Any

import fastjsonschema
from fastapi.openapi.models import OpenAPI
from httpx import AsyncClient

from tests.e2e._apps import new_api, new_app
from tests.e2e._workspaces import SCRIPT, assert_error, data_of
from tests.factories import register

HTTP_STEP = {"id": "fetch", "type": "httpRequest", "url": "https://example.com/"}


async def _blog(client: AsyncClient, headers: dict[str, str]) -> str:
    app_id = await new_app(client, headers, "Blog", description="A small blog")
    await new_api(
        client,
        headers,
        app_id,
        "listPosts",
        name="List posts",
        description="Newest first",
        docExtra="Pages hold at most 50 posts.",
        group="posts",
        price=5,
        steps=[HTTP_STEP],
        params=[
            {"name": "pageNo", "type": "integer", "min": 1, "default": 1},
            {"name": "tag", "type": "string", "enum": ["news", "howto"]},
        ],
    )
    await new_api(
        client,
        headers,
        app_id,
        "signIn",
        group="users",
        params=[
            {"name": "email", "type": "string", "required": True},
            {"name": "password", "type": "string", "required": True, "sensitive": True},
        ],
    )
    await new_api(
        client,
        headers,
        app_id,
        "me",
        auth={"requireToken": True, "mode": "simple", "rights": ["user"]},
    )
    return app_id


async def _openapi(
    client: AsyncClient, headers: dict[str, str], app_id: str, version: str | None = None
) -> dict[str, Any]:
    query = f"?version={version}" if version else ""
    response = await client.get(f"/api/v1/apps/{app_id}/openapi.json{query}", headers=headers)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/json")
    document: dict[str, Any] = response.json()
    return document


async def test_openapi_document_describes_every_api(client: AsyncClient) -> None:
    user = await register(client)
    app_id = await _blog(client, user.headers)
    document = await _openapi(client, user.headers, app_id)
    OpenAPI.model_validate(document)  # FastAPI's own OpenAPI 3.1 models accept it
    assert document["openapi"] == "3.1.0"
    assert document["info"] == {"title": "Blog", "version": "dev", "description": "A small blog"}
    assert document["tags"] == [{"name": "posts"}, {"name": "users"}]
    assert list(document["paths"]) == [
        "/api/v1/invocations#listPosts",
        "/api/v1/invocations#me",
        "/api/v1/invocations#signIn",
    ]
    operation = document["paths"]["/api/v1/invocations#listPosts"]["post"]
    assert operation["operationId"] == "listPosts"
    assert operation["summary"] == "List posts"
    assert operation["description"] == "Newest first\n\nPages hold at most 50 posts."
    assert operation["tags"] == ["posts"]
    assert (operation["x-price"], operation["x-cost"]) == (5, 5)
    signed: dict[str, list[str]] = {
        "signAppId": [],
        "signTimestamp": [],
        "signNonce": [],
        "signature": [],
    }
    assert operation["security"] == [{"apiKey": []}, signed]
    schemes = document["components"]["securitySchemes"]
    assert [schemes[name]["name"] for name in signed] == [
        "X-App-Id",
        "X-Timestamp",
        "X-Nonce",
        "X-Sign",
    ]
    body = operation["requestBody"]["content"]["application/json"]["schema"]
    assert body["properties"]["appId"]["const"] == app_id
    assert body["properties"]["api"]["const"] == "listPosts"
    args = body["properties"]["args"]
    assert args["properties"]["pageNo"] == {"type": "integer", "minimum": 1, "default": 1}
    assert args["properties"]["tag"]["enum"] == ["news", "howto"]
    validate = fastjsonschema.compile(body)
    validate({"appId": app_id, "api": "listPosts", "args": {"pageNo": 2, "tag": "news"}})

    sign_in = document["paths"]["/api/v1/invocations#signIn"]["post"]
    sign_in_args = sign_in["requestBody"]["content"]["application/json"]["schema"]["properties"][
        "args"
    ]
    assert sign_in_args["required"] == ["email", "password"]
    assert sign_in_args["properties"]["password"]["writeOnly"] is True
    me = document["paths"]["/api/v1/invocations#me"]["post"]
    assert me["security"] == [
        {"apiKey": [], "endUserToken": []},
        {"publishableKey": [], "endUserToken": []},  # a browser's key, with its user's token
        {**signed, "endUserToken": []},
    ]
    assert me["x-permission"] == {"requireToken": True, "mode": "simple", "rights": ["user"]}
    assert "tags" not in me


async def test_docs_follow_latest_by_default_and_any_version_on_request(
    client: AsyncClient,
) -> None:
    user = await register(client)
    h = user.headers
    app_id = await _blog(client, h)
    published = await client.post(
        f"/api/v1/apps/{app_id}/versions", json={"bump": "major"}, headers=h
    )
    data_of(published)
    await new_api(client, h, app_id, "draftOnly")

    default = await _openapi(client, h, app_id)
    assert default["info"]["version"] == "1.0.0"
    assert "/api/v1/invocations#draftOnly" not in default["paths"]
    assert default == await _openapi(client, h, app_id, "latest")
    assert default == await _openapi(client, h, app_id, "1.0.0")
    dev = await _openapi(client, h, app_id, "dev")
    assert "/api/v1/invocations#draftOnly" in dev["paths"]
    example = dev["paths"]["/api/v1/invocations#draftOnly"]["post"]["requestBody"]["content"][
        "application/json"
    ]["example"]
    assert example == {"appId": app_id, "api": "draftOnly", "version": "dev", "args": {}}

    data_of(
        await client.patch(
            f"/api/v1/apps/{app_id}/versions/1.0.0", json={"deprecated": 1}, headers=h
        )
    )
    deprecated = await _openapi(client, h, app_id, "1.0.0")
    assert deprecated["info"]["x-deprecated"] is True
    assert all(item["post"]["deprecated"] is True for item in deprecated["paths"].values())
    for version in ["9.9.9", "1.0", "<script>"]:
        response = await client.get(
            f"/api/v1/apps/{app_id}/openapi.json", params={"version": version}, headers=h
        )
        assert_error(response, 404, "version_not_found")
    too_long = await client.get(
        f"/api/v1/apps/{app_id}/openapi.json", params={"version": "1" * 40}, headers=h
    )
    assert too_long.status_code == 400


async def test_html_page_is_self_contained_and_escapes_builder_text(client: AsyncClient) -> None:
    user = await register(client)
    app_id = await _blog(client, user.headers)
    await new_api(client, user.headers, app_id, "xss", description=SCRIPT, docExtra="<b>bold</b>")
    response = await client.get(f"/api/v1/apps/{app_id}/docs", headers=user.headers)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert "default-src 'none'" in response.headers["content-security-policy"]
    html = response.text
    assert "<script" not in html.lower()
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "&lt;b&gt;bold&lt;/b&gt;" in html
    # No external resource of any kind: works offline.
    assert not re.search(r"""(src|href)\s*=\s*['"]?(https?:)?//""", html)
    for text in ["Blog", "listPosts", "signIn", "Pages hold at most 50 posts.", "pageNo", "5 RU"]:
        assert text in html
    unauthenticated = await client.get(f"/api/v1/apps/{app_id}/docs")
    assert_error(unauthenticated, 401, "unauthenticated")
