"""Builder inputs that could not be stored or served back: each is a clear 400 (or 404), never a
500 on PostgreSQL nor a value stored on SQLite that the other backend refuses, and nothing
changes. Found by the builder review."""

import threading
from typing import Any

import pytest
from fastapi import FastAPI
from httpx import AsyncClient

from apiforge.builder import transfer
from tests.e2e._apps import app_state, new_api, new_app
from tests.e2e._workspaces import assert_error, data_of
from tests.factories import User, make_admin, register

JSON = {"Content-Type": "application/json"}
YAML = {"Content-Type": "application/yaml"}
DEEP = b"[" * 200 + b"]" * 200


async def _apps_of(client: AsyncClient, user: User) -> list[str]:
    page = data_of(await client.get("/api/v1/apps?pageSize=100", headers=user.headers))
    return sorted(app["id"] for app in page["list"])


def _field_error(response: Any, field: str, fragment: str) -> None:
    errors = assert_error(response, 400, "invalid_input")["errors"]
    assert any(e["field"] == field and fragment in e["message"] for e in errors), errors


# (method, path template, raw JSON body, field named, message fragment)
UNSTORABLE: list[tuple[str, str, bytes, str, str]] = [
    ("POST", "/api/v1/apps", b'{"name": "a\\u0000b"}', "name", "NUL"),
    ("POST", "/api/v1/apps", b'{"name": "a", "config": {"k\\u0000": 1}}', "config", "NUL"),
    ("POST", "/api/v1/apps", b'{"name": "a", "config": {"x": NaN}}', "config", "NaN"),
    ("POST", "/api/v1/apps", b'{"name": "a", "config": {"x": [-Infinity]}}', "config", "NaN"),
    ("POST", "/api/v1/apps", b'{"name": "a", "config": {"x": ' + DEEP + b"}}", "config", "deeper"),
    (
        "POST",
        "/api/v1/apps",
        b'{"name": "a", "config": {"x": 1' + b"0" * 25 + b"}}",
        "config",
        "64",
    ),
    ("PATCH", "/api/v1/apps/{app}", b'{"description": "\\u0000"}', "description", "NUL"),
    ("PATCH", "/api/v1/apps/{app}", b'{"config": {"x": {"y": NaN}}}', "config", "NaN"),
    ("PATCH", "/api/v1/apps/{app}", b'{"config": {"x": "\\ud800"}}', "config", "Unicode"),
    (
        "POST",
        "/api/v1/apps/{app}/apis",
        b'{"api": "x", "steps": [{"id": "s", "type": "set", "value": {"\\udfff": 1}}]}',
        "steps",
        "Unicode",
    ),
    (
        "POST",
        "/api/v1/apps/{app}/apis",
        b'{"api": "x", "steps": [{"id": "s", "type": "set", "value": "a\\u0000"}]}',
        "steps",
        "NUL",
    ),
    (
        "POST",
        "/api/v1/apps/{app}/apis",
        b'{"api": "x", "steps": [{"id": "s", "type": "set", "value": NaN}]}',
        "steps",
        "NaN",
    ),
    (
        "POST",
        "/api/v1/apps/{app}/apis",
        b'{"api": "x", "params": [{"name": "p", "type": "number", "default": Infinity}]}',
        "params",
        "NaN",
    ),
    ("POST", "/api/v1/apps/{app}/apis", b'{"api": "x", "group": "g\\u0000"}', "group", "NUL"),
    (
        "POST",
        "/api/v1/apps/{app}/apis",
        b'{"api": "x", "auth": {"requireToken": 1, "mode": "simple", "rights": ["r\\u0000"]}}',
        "auth.rights",
        "NUL",
    ),
    ("PATCH", "/api/v1/apps/{app}/apis/{api}", b'{"docExtra": "\\u0000"}', "docExtra", "NUL"),
    (
        "POST",
        "/api/v1/apps/{app}/apis",
        b'{"api": "x", "params": [{"name": "p", "type": "array", "default": ' + DEEP + b"}]}",
        "params",
        "deeper",
    ),
    (
        "POST",
        "/api/v1/apps/{app}/versions",
        b'{"bump": "major", "notes": "\\u0000"}',
        "notes",
        "NUL",
    ),
]


@pytest.mark.parametrize(("method", "path", "body", "field", "fragment"), UNSTORABLE)
async def test_unstorable_builder_input_is_a_400_and_changes_nothing(
    client: AsyncClient, method: str, path: str, body: bytes, field: str, fragment: str
) -> None:
    user = await register(client)
    app_id = await new_app(client, user.headers, "Blog", config={"siteName": "Ada"})
    api_id = await new_api(client, user.headers, app_id, "ping")
    before = await app_state(client, user.headers, app_id)
    apps_before = await _apps_of(client, user)

    url = path.format(app=app_id, api=api_id)
    response = await client.request(method, url, content=body, headers={**user.headers, **JSON})

    _field_error(response, field, fragment)
    assert await app_state(client, user.headers, app_id) == before
    assert await _apps_of(client, user) == apps_before


@pytest.mark.parametrize("method", ["POST", "PATCH"])
async def test_steps_nested_too_deep_are_refused_before_they_are_saved(
    client: AsyncClient, method: str
) -> None:
    """300 levels were saved, then every read of the API (its page, a version, an export) was a
    500; on PATCH the answer itself was. Refused whatever the stack depth at hand."""
    user = await register(client)
    app_id = await new_app(client, user.headers)
    api_id = await new_api(client, user.headers, app_id, "ping")
    before = await app_state(client, user.headers, app_id)
    nested = b"[" * 300 + b"1" + b"]" * 300
    steps = b'[{"id": "s", "type": "set", "value": ' + nested + b"}]"
    if method == "POST":
        url, body = f"/api/v1/apps/{app_id}/apis", b'{"api": "deep", "steps": ' + steps + b"}"
    else:
        url, body = f"/api/v1/apps/{app_id}/apis/{api_id}", b'{"steps": ' + steps + b"}"

    response = await client.request(method, url, content=body, headers={**user.headers, **JSON})

    errors = assert_error(response, 400, "invalid_definition")["errors"]
    assert errors[0]["field"] == "steps"
    assert "deeper than 64 levels" in errors[0]["message"]
    assert await app_state(client, user.headers, app_id) == before


async def test_a_64_bit_integer_in_a_definition_is_kept_and_exported(client: AsyncClient) -> None:
    """The limit is 64 bits, not less: the largest integer is stored, read and exported."""
    user = await register(client)
    big = 2**63 - 1
    app_id = await new_app(client, user.headers, "Blog", config={"big": [big, -(2**63)]})
    await new_api(
        client, user.headers, app_id, "ping", steps=[{"id": "s", "type": "set", "value": big}]
    )
    app = data_of(await client.get(f"/api/v1/apps/{app_id}", headers=user.headers))
    assert app["config"] == {"big": [big, -(2**63)]}
    exported = await client.get(f"/api/v1/apps/{app_id}/export", headers=user.headers)
    assert exported.status_code == 200
    assert exported.json()["apis"][0]["steps"][0]["value"] == big


@pytest.mark.parametrize("body", [{"name": None}, {"price": None}, {"steps": None}, {"auth": None}])
async def test_patching_an_api_field_to_null_is_a_400(
    client: AsyncClient, body: dict[str, Any]
) -> None:
    """Only `returnSteps` may be null; a null elsewhere was a 500 on every backend."""
    user = await register(client)
    app_id = await new_app(client, user.headers)
    api_id = await new_api(client, user.headers, app_id, "ping", name="Ping")
    before = await app_state(client, user.headers, app_id)

    response = await client.patch(
        f"/api/v1/apps/{app_id}/apis/{api_id}", json=body, headers=user.headers
    )

    errors = assert_error(response, 400, "invalid_input")["errors"]
    assert [e["field"] for e in errors] == list(body)
    assert await app_state(client, user.headers, app_id) == before
    cleared = await client.patch(
        f"/api/v1/apps/{app_id}/apis/{api_id}", json={"returnSteps": None}, headers=user.headers
    )
    assert data_of(cleared)["returnSteps"] is None


@pytest.mark.parametrize(
    ("path", "field"),
    [
        ("/api/v1/apps?q=a%00b", "q"),
        ("/api/v1/apps/{app}/apis?q=%00", "q"),
        ("/api/v1/apps/{app}/apis?group=g%00", "group"),
    ],
)
async def test_a_nul_in_a_search_is_a_400(client: AsyncClient, path: str, field: str) -> None:
    user = await register(client)
    app_id = await new_app(client, user.headers)
    response = await client.get(path.format(app=app_id), headers=user.headers)
    _field_error(response, field, "NUL")


async def test_a_nul_in_a_step_type_price_is_an_unknown_step_type(
    client: AsyncClient, app: FastAPI
) -> None:
    admin = await make_admin(app, client)
    response = await client.put(
        "/api/v1/admin/pricing/set%00", json={"cost": 5}, headers=admin.headers
    )
    assert_error(response, 404, "step_type_not_found")


YAML_VALUES = [
    ("when: 2020-01-01", "app.config", "date"),
    ("when: 2020-01-01T10:00:00Z", "app.config", "datetime"),
    ("blob: [1, !!binary aGVsbG8=]", "app.config", "bytes"),
    ("tags: !!set {a, b}", "app.config", "set"),
    ("ratio: .nan", "app.config", "NaN"),
    ("limits: {1: 2}", "app.config", "not a string"),
]


@pytest.mark.parametrize(("line", "field", "fragment"), YAML_VALUES)
async def test_yaml_values_json_cannot_hold_are_a_400(
    client: AsyncClient, line: str, field: str, fragment: str
) -> None:
    """YAML types with no JSON form (dates, binaries, sets, NaN, non-string keys) were 500s."""
    user = await register(client)
    document = f"app:\n  name: Imported\n  config:\n    {line}\n".encode()
    response = await client.post(
        "/api/v1/apps/import", content=document, headers={**user.headers, **YAML}
    )
    _field_error(response, field, fragment)
    assert await _apps_of(client, user) == []


async def test_informative_yaml_times_stay_accepted(client: AsyncClient) -> None:
    """`exportedTime` and a version's `createdTime` are not stored: YAML may make them dates."""
    user = await register(client)
    document = (
        b"exportedTime: 2024-01-01T00:00:00Z\napp:\n  name: Imported\n"
        b"versions:\n  - version: 1.0.0\n    createdTime: 2024-01-01\n"
    )
    response = await client.post(
        "/api/v1/apps/import", content=document, headers={**user.headers, **YAML}
    )
    assert data_of(response)["id"] in await _apps_of(client, user)


@pytest.mark.parametrize("name", ["two words", "posts\x00", "1posts", "p" * 65])
async def test_an_import_refuses_collection_names_the_datasets_api_refuses(
    client: AsyncClient, name: str
) -> None:
    user = await register(client)
    refused = await client.post(
        "/api/v1/datasets", json={"appId": "x", "name": name}, headers=user.headers
    )
    assert refused.status_code == 400
    document = {"app": {"name": "Imported"}, "collections": [{"name": name}]}
    response = await client.post("/api/v1/apps/import", json=document, headers=user.headers)
    errors = assert_error(response, 400, "invalid_input")["errors"]
    assert [e["field"] for e in errors] == ["collections.0.name"]
    assert await _apps_of(client, user) == []


async def test_an_app_holds_at_most_50_secrets_however_they_are_patched(
    client: AsyncClient,
) -> None:
    user = await register(client)
    first = {f"KEY_{i}": "v" for i in range(30)}
    app_id = await new_app(client, user.headers, secrets=first)
    before = await app_state(client, user.headers, app_id)

    more = {f"MORE_{i}": "v" for i in range(21)}
    response = await client.patch(
        f"/api/v1/apps/{app_id}", json={"secrets": more}, headers=user.headers
    )
    assert_error(response, 400, "too_many_secrets")
    assert await app_state(client, user.headers, app_id) == before

    # Deleting in the same PATCH makes room: the limit is on what the app ends up with.
    swap = {**{f"KEY_{i}": None for i in range(10)}, **{f"MORE_{i}": "v" for i in range(30)}}
    response = await client.patch(
        f"/api/v1/apps/{app_id}", json={"secrets": swap}, headers=user.headers
    )
    assert len(data_of(response)["secretNames"]) == 50


async def test_a_yaml_document_is_parsed_off_the_event_loop(
    client: AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Parsing YAML is CPU work (seconds for a large document): on the event loop it stalled
    every other request of the server meanwhile."""
    threads: list[threading.Thread] = []
    parse = transfer.parse_document

    def recording(raw: bytes, content_type: str) -> Any:
        threads.append(threading.current_thread())
        return parse(raw, content_type)

    monkeypatch.setattr(transfer, "parse_document", recording)
    user = await register(client)
    response = await client.post(
        "/api/v1/apps/import", content=b"app:\n  name: Imported\n", headers={**user.headers, **YAML}
    )
    data_of(response)
    assert threads
    assert threads[0] is not threading.current_thread()
