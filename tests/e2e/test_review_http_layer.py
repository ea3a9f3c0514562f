"""DESIGN.md §2 on odd requests, and the gateway's fast path (`http/fastpath.py`) keeping the
conventions of the management API's stack: one envelope for a body that is not JSON, a 415 for
a body sent as something else, `Allow` on every 405, and the client address read from every
`X-Forwarded-For` line on both edges."""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from httpx import AsyncClient, Response

from apiforge.core.settings import Settings
from tests.e2e._apps import new_api, new_app, set_step
from tests.e2e._keys import app_key, create_key, notes_app
from tests.e2e._workspaces import assert_error, data_of
from tests.factories import User, app_client, register

INVOCATIONS = "/api/v1/invocations"
JSON = {"Content-Type": "application/json"}
NOT_JSON = [{"field": "body", "message": "is not valid JSON"}]


async def _hello(client: AsyncClient) -> tuple[User, dict[str, Any]]:
    user = await register(client)
    app_id = await new_app(client, user.headers)
    await new_api(client, user.headers, app_id, "hello", steps=[set_step("greeting", "hi")])
    return user, {"appId": app_id, "api": "hello", "version": "dev", "args": {}}


async def _workspace_names(client: AsyncClient, user: User) -> list[str]:
    listed = data_of(await client.get("/api/v1/workspaces", headers=user.headers))["list"]
    return sorted(w["name"] for w in listed)


# --- a body that is not JSON ------------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(b'{"name": "a",', id="truncated"),  # FastAPI: loc ("body", <offset>)
        pytest.param(b'{"name": "\xff"}', id="not-utf8"),  # FastAPI: its own HTTPException 400
        pytest.param(b"[" * 100_000 + b"]" * 100_000, id="too-deep"),
    ],
)
async def test_a_malformed_body_gets_one_envelope_on_both_edges(
    client: AsyncClient, body: bytes
) -> None:
    """The gateway named the body; the management API named a character offset as the field
    (`"field": "13"`), or left `errors` out altogether."""
    user, _ = await _hello(client)
    before = await _workspace_names(client, user)
    answers = {
        path: await client.post(path, content=body, headers={**user.headers, **JSON})
        for path in ("/api/v1/workspaces", INVOCATIONS)
    }
    for path, response in answers.items():
        assert response.status_code == 400, path
        assert response.json() == {
            "code": 400,
            "message": "Malformed JSON body",
            "data": {"error": "malformed_json", "errors": NOT_JSON},
        }, path
        assert len(response.headers["x-request-id"]) == 26
    assert await _workspace_names(client, user) == before


# --- Content-Type -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "content_type",
    [
        None,  # `requests.post(url, data=json.dumps(...))`
        "application/x-www-form-urlencoded",  # `curl -d '{...}'`
        "text/plain",
        "multipart/form-data; boundary=x",
    ],
)
@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("POST", "/api/v1/workspaces", b'{"name": "Typed wrong"}'),  # a model
        ("PUT", "/api/v1/user/settings", b'{"theme": "dark"}'),  # a JSON object
    ],
)
async def test_a_json_body_sent_as_another_type_is_415(
    client: AsyncClient, content_type: str | None, method: str, path: str, body: bytes
) -> None:
    """It was a 400 `invalid_input` whose field error read "Input should be a valid dictionary
    or object to extract fields from" — for a body that is a perfectly good object."""
    user = await register(client)
    headers = dict(user.headers)
    if content_type is not None:
        headers["Content-Type"] = content_type
    response = await client.request(method, path, content=body, headers=headers)
    data = assert_error(response, 415, "unsupported_media_type")
    assert data == {"error": "unsupported_media_type", "expected": "application/json"}
    assert response.json()["message"] == "Content-Type must be application/json"
    assert "Typed wrong" not in await _workspace_names(client, user)
    assert data_of(await client.get("/api/v1/user/settings", headers=user.headers)) == {}


@pytest.mark.parametrize(
    "content_type",
    ["application/json", "application/json; charset=utf-8", "Application/JSON", "text/json"],
)
async def test_json_content_types_still_parse(client: AsyncClient, content_type: str) -> None:
    user = await register(client)
    headers = {**user.headers, "Content-Type": content_type}
    response = await client.post("/api/v1/workspaces", content=b'{"name": "T"}', headers=headers)
    if content_type == "text/json":  # not `application/*json`: refused, as other text types
        assert_error(response, 415, "unsupported_media_type")
    else:
        assert data_of(response)["id"]


async def test_field_errors_of_a_json_body_stay_400(client: AsyncClient) -> None:
    """Only a body FastAPI left undecoded is a 415: a JSON value of the wrong shape is not."""
    user = await register(client)
    for body in (b'"a string"', b"[1, 2]", b"null", b"{}"):
        response = await client.post(
            "/api/v1/workspaces", content=body, headers={**user.headers, **JSON}
        )
        assert response.status_code == 400, body
        assert response.json()["data"]["error"] in {"invalid_input", "missing_parameters"}


@pytest.mark.parametrize(
    ("path", "query", "message"),
    [
        ("/api/v1/apps", {"q": "x" * 101}, "String should have at most 100 characters"),
        ("/api/v1/apps", {"sort": "x" * 65}, "String should have at most 64 characters"),
    ],
)
async def test_a_too_long_query_text_is_counted_in_characters(
    client: AsyncClient, path: str, query: dict[str, str], message: str
) -> None:
    """A length bound on a validated text (`Annotated[Text, Query(max_length=...)]`) is worded
    in characters, as every other text bound, not "items after validation"."""
    user = await register(client)
    response = await client.get(path, params=query, headers=user.headers)
    assert response.status_code == 400
    field = next(iter(query))
    assert response.json()["data"]["errors"] == [{"field": field, "message": message}]


# --- 405 --------------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["GET", "HEAD", "PUT", "PATCH", "DELETE", "PROPFIND"])
async def test_the_gateway_405_names_its_methods_like_the_routers(
    client: AsyncClient, method: str
) -> None:
    """RFC 9110 §15.5.6: a 405 MUST carry `Allow`; the management API's did, the fast path's
    did not."""
    user, _ = await _hello(client)
    response = await client.request(method, INVOCATIONS, headers=user.headers)
    assert response.status_code == 405
    assert response.headers["allow"] == "OPTIONS, POST"
    assert len(response.headers["x-request-id"]) == 26
    if method != "HEAD":
        assert_error(response, 405, "method_not_allowed")
    stack = await client.request(method, "/api/v1/auth/register", headers=user.headers)
    assert stack.status_code == 405
    assert stack.headers["allow"] == "POST"


async def test_a_method_override_on_the_gateway_is_a_405_with_allow(client: AsyncClient) -> None:
    user, call = await _hello(client)
    headers = {**user.headers, "X-HTTP-Method-Override": "delete"}
    response = await client.post(INVOCATIONS, json=call, headers=headers)
    assert_error(response, 405, "method_not_allowed")
    assert response.headers["allow"] == "OPTIONS, POST"
    assert data_of(await client.post(INVOCATIONS, json=call, headers=user.headers))


# --- X-Forwarded-For --------------------------------------------------------------------------


@asynccontextmanager
async def _behind_proxies(settings: Settings) -> AsyncIterator[AsyncClient]:
    """A node whose socket peer (127.0.0.1) and the 10/8 network are trusted proxies."""
    trusted = settings.model_copy(update={"trusted_proxies": ["127.0.0.1/32", "10.0.0.0/8"]})
    async with app_client(trusted) as (_application, http):
        yield http


def _lines(*forwarded: str) -> list[tuple[str, str]]:
    return [("X-Forwarded-For", value) for value in forwarded]


async def test_every_forwarded_for_line_counts_on_both_edges(
    client: AsyncClient, settings: Settings
) -> None:
    """Two trusted proxies that each add a line of their own (HAProxy's `option forwardfor`
    does): the first names the client, the second the first proxy. The management API read
    both lines; the gateway read only the last, took the proxy for the client, and refused a
    key limited to the client's network."""
    owner = await register(client)
    app_id = await notes_app(client, owner)
    _, app_secret = await app_key(client, owner, app_id, allowedIps=["203.0.113.0/24"])
    _, ws_secret = await create_key(
        client, owner.headers, type="ws", role="editor", allowedIps=["203.0.113.0/24"]
    )
    call = {"appId": app_id, "api": "echo", "version": "latest", "args": {"text": "hi"}}

    async def both(proxied: AsyncClient, lines: list[tuple[str, str]]) -> tuple[Response, ...]:
        gateway = await proxied.post(
            INVOCATIONS, json=call, headers=[("X-Api-Key", app_secret), *lines]
        )
        management = await proxied.get("/api/v1/apps", headers=[("X-Api-Key", ws_secret), *lines])
        return gateway, management

    async with _behind_proxies(settings) as proxied:
        gateway, management = await both(proxied, _lines("203.0.113.9", "10.0.0.2"))
        assert data_of(management)["list"]
        assert data_of(gateway) == {"echo": "hi"}
        # The client forged a line; the proxy added the address it saw: refused on both.
        for response in await both(proxied, _lines("203.0.113.9", "198.51.100.7")):
            assert_error(response, 403, "ip_not_allowed")
        # One line, as most proxies send it: unchanged.
        gateway, management = await both(proxied, _lines("203.0.113.9, 10.0.0.2"))
        assert data_of(gateway) == {"echo": "hi"}
        assert data_of(management)["list"]
