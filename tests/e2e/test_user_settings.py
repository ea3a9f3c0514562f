"""`/api/v1/user/settings` and `/api/v1/user/settings/apps/{appId}/{key}`: per-account storage
of opaque JSON, its caps, and strict isolation between accounts."""

from typing import Any

import pytest
from fastapi import FastAPI
from httpx import AsyncClient, Response
from sqlalchemy import func, select

from apiforge.accounts import settings_service
from apiforge.accounts.models import AppSetting, UserSetting
from apiforge.core.db import unit_of_work
from tests.factories import User, register

DOC = "/api/v1/user/settings"
APP = "/api/v1/user/settings/apps"
INJECTION = "'; DROP TABLE accounts; --"
SCRIPT = "<script>alert(1)</script>"


def _nested(depth: int) -> Any:
    """A value with `depth` containers nested inside each other."""
    value: Any = "leaf"
    for level in range(depth):
        value = {"k": value} if level % 2 else [value]
    return value


async def _count(app: FastAPI, model: Any) -> int:
    async with unit_of_work(app.state.sessionmaker) as session:
        return int(await session.scalar(select(func.count()).select_from(model)) or 0)


async def _put_raw(client: AsyncClient, url: str, user: User, content: bytes) -> Response:
    headers = {**user.headers, "Content-Type": "application/json"}
    return await client.put(url, content=content, headers=headers)


def _error(response: Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["code"] == status
    data: dict[str, Any] = body["data"]
    return data


# --- access ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "url", "body"),
    [
        ("GET", DOC, None),
        ("PUT", DOC, {"a": 1}),
        ("GET", f"{APP}/notes", None),
        ("GET", f"{APP}/notes/font", None),
        ("PUT", f"{APP}/notes/font", {"value": 1}),
        ("DELETE", f"{APP}/notes/font", None),
    ],
)
async def test_every_route_needs_a_signed_in_account(
    app: FastAPI, client: AsyncClient, method: str, url: str, body: Any
) -> None:
    response = await client.request(method, url, json=body)
    assert _error(response, 401)["error"] == "unauthenticated"
    bad_token = await client.request(
        method, url, json=body, headers={"Authorization": "Bearer not.a.jwt"}
    )
    assert bad_token.status_code == 401
    assert await _count(app, UserSetting) == 0
    assert await _count(app, AppSetting) == 0


# --- the settings document --------------------------------------------------------------------


async def test_document_is_empty_then_replaced_whole(client: AsyncClient) -> None:
    user = await register(client)
    empty = await client.get(DOC, headers=user.headers)
    assert empty.json() == {"code": 200, "message": "success", "data": {}}

    document = {
        "theme": "dark",
        "snake_case_key": {"stays": "as given"},
        "list": [1, 2.5, True, None, "  padded  "],
        "note": INJECTION,
        "html": SCRIPT,
        "unicode": "日本語 ✓",
        "big": 2**63 - 1,
    }
    saved = await client.put(DOC, json=document, headers=user.headers)
    assert saved.status_code == 200
    assert saved.json()["data"] == document
    assert (await client.get(DOC, headers=user.headers)).json()["data"] == document

    replaced = await client.put(DOC, json={"only": "this"}, headers=user.headers)
    assert replaced.json()["data"] == {"only": "this"}
    assert (await client.get(DOC, headers=user.headers)).json()["data"] == {"only": "this"}

    cleared = await client.put(DOC, json={}, headers=user.headers)
    assert cleared.json()["data"] == {}
    assert (await client.get(DOC, headers=user.headers)).json()["data"] == {}


@pytest.mark.parametrize(
    ("content", "status", "reason"),
    [
        (b'{"theme": "light"', 400, "malformed_json"),
        (b"theme=light", 400, "malformed_json"),
        (b"[1, 2]", 400, "invalid_input"),
        (b'"light"', 400, "invalid_input"),
        (b"42", 400, "invalid_input"),
        (b"null", 400, "invalid_input"),
        (b'{"n": NaN}', 400, "invalid_setting_value"),
        (b'{"n": Infinity}', 400, "invalid_setting_value"),
        (b'{"n": 9223372036854775808}', 400, "invalid_setting_value"),
        (b'{"s": "a\\u0000b"}', 400, "invalid_setting_value"),
        (b'{"a\\u0000": 1}', 400, "invalid_setting_value"),
        (b'{"s": "\\ud800"}', 400, "invalid_setting_value"),
    ],
)
async def test_bad_documents_are_refused_and_change_nothing(
    client: AsyncClient, content: bytes, status: int, reason: str
) -> None:
    user = await register(client)
    await client.put(DOC, json={"theme": "dark"}, headers=user.headers)
    response = await _put_raw(client, DOC, user, content)
    assert _error(response, status)["error"] == reason
    assert (await client.get(DOC, headers=user.headers)).json()["data"] == {"theme": "dark"}


async def test_document_nesting_is_capped_at_ten_levels(client: AsyncClient) -> None:
    user = await register(client)
    deepest = {"d": _nested(9)}  # the document object itself is the tenth level
    assert (await client.put(DOC, json=deepest, headers=user.headers)).status_code == 200
    too_deep = await client.put(DOC, json={"d": _nested(10)}, headers=user.headers)
    data = _error(too_deep, 400)
    assert data["error"] == "invalid_setting_value"
    assert data["errors"][0]["field"] == "body"
    assert (await client.get(DOC, headers=user.headers)).json()["data"] == deepest


async def test_absurd_nesting_is_a_400_not_a_crash(client: AsyncClient) -> None:
    user = await register(client)
    response = await _put_raw(client, DOC, user, b"[" * 100_000 + b"]" * 100_000)
    assert response.status_code == 400
    assert (await client.get(DOC, headers=user.headers)).json()["data"] == {}


async def test_document_size_is_capped(app: FastAPI, client: AsyncClient) -> None:
    limit = app.state.settings.max_setting_bytes
    user = await register(client)
    overhead = len('{"s":""}')
    fits = {"s": "x" * (limit - overhead)}
    assert (await client.put(DOC, json=fits, headers=user.headers)).status_code == 200
    response = await client.put(DOC, json={"s": "x" * (limit - overhead + 1)}, headers=user.headers)
    data = _error(response, 413)
    assert data["error"] == "payload_too_large"
    assert data["maxBytes"] == limit
    assert (await client.get(DOC, headers=user.headers)).json()["data"] == fits


# --- app settings -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [None, 0, -7, 3.25, True, "", INJECTION, SCRIPT, "  kept  ", [], {}, [1, {"a": [None]}]],
)
async def test_app_setting_round_trips_any_json_value(client: AsyncClient, value: Any) -> None:
    user = await register(client)
    url = f"{APP}/notes/font"
    saved = await client.put(url, json={"value": value}, headers=user.headers)
    assert saved.status_code == 200
    data = saved.json()["data"]
    assert data["appId"] == "notes"
    assert data["key"] == "font"
    assert data["value"] == value
    assert data["updatedTime"].endswith("Z")
    read = await client.get(url, headers=user.headers)
    assert read.json()["data"]["value"] == value


async def test_app_setting_put_replaces_and_delete_removes(client: AsyncClient) -> None:
    user = await register(client)
    url = f"{APP}/notes/font"
    missing = await client.get(url, headers=user.headers)
    assert _error(missing, 404)["error"] == "setting_not_found"
    await client.put(url, json={"value": "serif"}, headers=user.headers)
    await client.put(url, json={"value": {"family": "mono"}}, headers=user.headers)
    assert (await client.get(url, headers=user.headers)).json()["data"]["value"] == {
        "family": "mono"
    }
    deleted = await client.delete(url, headers=user.headers)
    assert deleted.json() == {
        "code": 200,
        "message": "success",
        "data": {"appId": "notes", "key": "font"},
    }
    assert (await client.get(url, headers=user.headers)).status_code == 404
    again = await client.delete(url, headers=user.headers)
    assert _error(again, 404)["error"] == "setting_not_found"


async def test_app_settings_list_is_per_app_paginated_and_sorted(client: AsyncClient) -> None:
    user = await register(client)
    for key in ("b", "c", "a"):
        await client.put(f"{APP}/notes/{key}", json={"value": key * 2}, headers=user.headers)
    await client.put(f"{APP}/other.app/z", json={"value": 1}, headers=user.headers)

    listing = await client.get(f"{APP}/notes", headers=user.headers)
    page = listing.json()["data"]
    assert page["totalCount"] == 3
    assert [item["key"] for item in page["list"]] == ["a", "b", "c"]
    assert page["list"][0] == {
        "key": "a",
        "value": "aa",
        "updatedTime": page["list"][0]["updatedTime"],
    }
    second = await client.get(
        f"{APP}/notes", params={"pageSize": "2", "pageNo": "2"}, headers=user.headers
    )
    assert [item["key"] for item in second.json()["data"]["list"]] == ["c"]
    assert second.json()["data"]["totalPage"] == 2
    desc = await client.get(
        f"{APP}/notes", params={"sort": "key", "order": "desc"}, headers=user.headers
    )
    assert [item["key"] for item in desc.json()["data"]["list"]] == ["c", "b", "a"]
    by_time = await client.get(f"{APP}/notes", params={"sort": "updatedTime"}, headers=user.headers)
    assert by_time.status_code == 200
    bad_sort = await client.get(f"{APP}/notes", params={"sort": "value"}, headers=user.headers)
    assert _error(bad_sort, 400)["error"] == "invalid_sort_field"
    none = await client.get(f"{APP}/unused", headers=user.headers)
    assert none.json()["data"]["list"] == []
    assert none.json()["data"]["totalCount"] == 0


@pytest.mark.parametrize(
    ("app_id", "key", "field"),
    [
        ("_notes", "font", "appId"),
        ("-notes", "font", "appId"),
        (".notes", "font", "appId"),
        ("n" * 65, "font", "appId"),
        ("no tes", "font", "appId"),
        ("nötes", "font", "appId"),
        ("notes%0A", "font", "appId"),
        ("notes", "font%0A", "key"),
        ("notes", "k" * 65, "key"),
        ("notes", "a%27%3B%20DROP%20TABLE%20accounts", "key"),
        ("notes", "%3Cscript%3E", "key"),
        ("notes", "_key", "key"),
    ],
)
async def test_malformed_app_id_or_key_is_400(
    app: FastAPI, client: AsyncClient, app_id: str, key: str, field: str
) -> None:
    user = await register(client)
    url = f"{APP}/{app_id}/{key}"
    for method, body in (("GET", None), ("PUT", {"value": 1}), ("DELETE", None)):
        response = await client.request(method, url, json=body, headers=user.headers)
        data = _error(response, 400)
        assert data["error"] == "invalid_input"
        assert field in [error["field"] for error in data["errors"]]
    if field == "appId":
        listing = await client.get(f"{APP}/{app_id}", headers=user.headers)
        assert listing.status_code == 400
    assert await _count(app, AppSetting) == 0


async def test_longest_and_punctuated_names_are_accepted(client: AsyncClient) -> None:
    user = await register(client)
    app_id, key = "A" + "b" * 63, "9.z_-x"
    saved = await client.put(f"{APP}/{app_id}/{key}", json={"value": 1}, headers=user.headers)
    assert saved.status_code == 200
    assert (saved.json()["data"]["appId"], saved.json()["data"]["key"]) == (app_id, key)


@pytest.mark.parametrize(
    ("content", "status", "reason"),
    [
        (b'{"value": 1', 400, "malformed_json"),
        (b"{}", 400, "missing_parameters"),
        (b'{"val": 1}', 400, "invalid_input"),
        (b'{"value": 1, "extra": 2}', 400, "invalid_input"),
        (b"[1]", 400, "invalid_input"),
        (b"1", 400, "invalid_input"),
        (b'{"value": NaN}', 400, "invalid_setting_value"),
        (b'{"value": "\\u0000"}', 400, "invalid_setting_value"),
        (b'{"value": {"\\udfff": 1}}', 400, "invalid_setting_value"),
        (b'{"value": -9223372036854775809}', 400, "invalid_setting_value"),
    ],
)
async def test_bad_app_setting_bodies_change_nothing(
    client: AsyncClient, content: bytes, status: int, reason: str
) -> None:
    user = await register(client)
    url = f"{APP}/notes/font"
    await client.put(url, json={"value": "serif"}, headers=user.headers)
    response = await _put_raw(client, url, user, content)
    assert _error(response, status)["error"] == reason
    assert (await client.get(url, headers=user.headers)).json()["data"]["value"] == "serif"


async def test_app_setting_caps_size_and_depth(app: FastAPI, client: AsyncClient) -> None:
    limit = app.state.settings.max_setting_bytes
    user = await register(client)
    url = f"{APP}/notes/blob"
    fits = "x" * (limit - 2)  # the two quotes of the JSON string count
    assert (await client.put(url, json={"value": fits}, headers=user.headers)).status_code == 200
    too_big = await client.put(url, json={"value": fits + "x"}, headers=user.headers)
    assert _error(too_big, 413)["error"] == "payload_too_large"
    too_deep = await client.put(url, json={"value": _nested(11)}, headers=user.headers)
    data = _error(too_deep, 400)
    assert data["error"] == "invalid_setting_value"
    assert data["errors"][0]["field"] == "value"
    deepest = await client.put(url, json={"value": _nested(10)}, headers=user.headers)
    assert deepest.status_code == 200
    assert deepest.json()["data"]["value"] == _nested(10)


async def test_new_keys_stop_at_the_account_limit(
    app: FastAPI, client: AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(settings_service, "MAX_APP_SETTINGS", 2)
    user = await register(client)
    other = await register(client)
    await client.put(f"{APP}/a/one", json={"value": 1}, headers=user.headers)
    await client.put(f"{APP}/b/two", json={"value": 2}, headers=user.headers)
    refused = await client.put(f"{APP}/c/three", json={"value": 3}, headers=user.headers)
    assert _error(refused, 403)["error"] == "settings_limit_reached"
    assert (await client.get(f"{APP}/c/three", headers=user.headers)).status_code == 404
    replaced = await client.put(f"{APP}/a/one", json={"value": 10}, headers=user.headers)
    assert replaced.json()["data"]["value"] == 10
    # The limit is per account: another account's keys do not count.
    assert (
        await client.put(f"{APP}/c/three", json={"value": 3}, headers=other.headers)
    ).status_code == 200


# --- isolation --------------------------------------------------------------------------------


async def test_accounts_never_see_or_touch_each_others_settings(
    app: FastAPI, client: AsyncClient
) -> None:
    alice = await register(client)
    bob = await register(client)
    await client.put(DOC, json={"secret": "alice's"}, headers=alice.headers)
    await client.put(f"{APP}/notes/font", json={"value": "alice-serif"}, headers=alice.headers)

    assert (await client.get(DOC, headers=bob.headers)).json()["data"] == {}
    assert (await client.get(f"{APP}/notes/font", headers=bob.headers)).status_code == 404
    assert (await client.get(f"{APP}/notes", headers=bob.headers)).json()["data"]["list"] == []
    assert (await client.delete(f"{APP}/notes/font", headers=bob.headers)).status_code == 404

    await client.put(DOC, json={"secret": "bob's"}, headers=bob.headers)
    await client.put(f"{APP}/notes/font", json={"value": "bob-mono"}, headers=bob.headers)
    assert (await client.get(DOC, headers=alice.headers)).json()["data"] == {"secret": "alice's"}
    alice_font = await client.get(f"{APP}/notes/font", headers=alice.headers)
    assert alice_font.json()["data"]["value"] == "alice-serif"
    bob_font = await client.get(f"{APP}/notes/font", headers=bob.headers)
    assert bob_font.json()["data"]["value"] == "bob-mono"

    assert (await client.delete(f"{APP}/notes/font", headers=bob.headers)).status_code == 200
    still = await client.get(f"{APP}/notes/font", headers=alice.headers)
    assert still.json()["data"]["value"] == "alice-serif"
    assert await _count(app, AppSetting) == 1
    assert await _count(app, UserSetting) == 2
