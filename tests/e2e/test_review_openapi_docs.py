"""Review of the generated OpenAPI documents: the platform's `/openapi.json` and each app's
`/apps/{appId}/openapi.json` must be valid OpenAPI 3.1 and describe what the endpoints really
take and answer — checked against real requests, not just against themselves."""

from typing import Any

import fastjsonschema
from fastapi.openapi.models import OpenAPI
from httpx import AsyncClient, Response
from openapi_spec_validator import OpenAPIV31SpecValidator

from tests.e2e._apps import new_api, new_app
from tests.e2e._workspaces import assert_error, data_of, new_workspace
from tests.factories import register

STEP = {"id": "out", "type": "set", "value": {"expr": "args"}}
ALL_KINDS = [
    {"name": "word", "type": "string", "required": True, "min": 3, "max": 5, "pattern": "^[a-z]+$"},
    {"name": "count", "type": "integer", "required": True, "min": 10, "max": 20},
    {"name": "ratio", "type": "number", "required": True, "min": 0.5, "max": 0.75},
    {"name": "below", "type": "integer", "required": True, "max": -3},
    {"name": "flag", "type": "boolean", "required": True},
    {"name": "items", "type": "array", "required": True, "min": 2, "max": 3},
    {"name": "shape", "type": "object", "required": True, "min": 1},
    {"name": "kind", "type": "string", "required": True, "enum": ["news", "howto"]},
    {"name": "level", "type": "integer", "enum": [1, 2], "default": 2},
    {"name": "note", "type": "string", "sensitive": True, "description": "<b>free</b> text"},
]


def _spec_errors(document: dict[str, Any]) -> list[str]:
    return [str(error)[:300] for error in OpenAPIV31SpecValidator(document).iter_errors()]


def _resolved(document: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    """`schema` with its `#/components/schemas/...` references inlined (fastjsonschema can't
    follow them into the enclosing document)."""
    if "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[-1]
        return _resolved(document, document["components"]["schemas"][name])
    out: dict[str, Any] = {}
    for key, value in schema.items():
        if isinstance(value, dict):
            value = (
                _resolved(document, value)
                if key != "properties"
                else {name: _resolved(document, sub) for name, sub in value.items()}
            )
        elif isinstance(value, list):
            value = [_resolved(document, v) if isinstance(v, dict) else v for v in value]
        out[key] = value
    return out


def _answer_schema(document: dict[str, Any], path: str, method: str, status: str) -> dict[str, Any]:
    responses = document["paths"][path][method]["responses"]
    response = responses.get(status) or responses[status[0] + "XX"]
    return _resolved(document, response["content"]["application/json"]["schema"])


def _matches(document: dict[str, Any], path: str, method: str, response: Response) -> None:
    """The real answer passes the schema the document gives for its status."""
    schema = _answer_schema(document, path, method, str(response.status_code))
    fastjsonschema.compile(schema)(response.json())


# --- the platform's document -------------------------------------------------------------------


async def test_platform_openapi_passes_the_openapi_31_validator(client: AsyncClient) -> None:
    document = (await client.get("/openapi.json")).json()
    assert document["openapi"].startswith("3.1.")
    assert _spec_errors(document) == []


async def test_platform_openapi_documents_the_400_envelope_it_answers_not_fastapi_422(
    client: AsyncClient,
) -> None:
    """Request validation answers 400 in the envelope; FastAPI's default docs promised a 422
    `{"detail": [...]}` on every route that no route ever answers."""
    document = (await client.get("/openapi.json")).json()
    assert "HTTPValidationError" not in str(document)
    for path, item in document["paths"].items():
        for method, operation in item.items():
            if operation.get("requestBody") or operation.get("parameters"):
                assert "400" in operation["responses"], f"{method.upper()} {path}"
            assert "4XX" in operation["responses"], f"{method.upper()} {path}"
    user = await register(client)
    missing = await client.post("/api/v1/apps", json={}, headers=user.headers)
    assert_error(missing, 400, "missing_parameters")
    _matches(document, "/api/v1/apps", "post", missing)
    wrong_type = await client.get("/api/v1/usage/calls?top=x", headers=user.headers)
    assert_error(wrong_type, 400, "invalid_input")
    _matches(document, "/api/v1/usage/calls", "get", wrong_type)
    anonymous = await client.get("/api/v1/apps")
    assert anonymous.status_code == 401
    _matches(document, "/api/v1/apps", "get", anonymous)
    gateway = await client.post("/api/v1/invocations", json={}, headers=user.headers)
    assert gateway.status_code == 400
    _matches(document, "/api/v1/invocations", "post", gateway)
    created = await client.post("/api/v1/apps", json={"name": "A"}, headers=user.headers)
    _matches(document, "/api/v1/apps", "post", created)


# --- each app's document -----------------------------------------------------------------------


async def _openapi(
    client: AsyncClient, headers: dict[str, str], app_id: str, version: str = "dev"
) -> dict[str, Any]:
    response = await client.get(
        f"/api/v1/apps/{app_id}/openapi.json", params={"version": version}, headers=headers
    )
    assert response.status_code == 200, response.text
    document: dict[str, Any] = response.json()
    return document


def _media(document: dict[str, Any], api: str) -> dict[str, Any]:
    media: dict[str, Any] = document["paths"][f"/api/v1/invocations#{api}"]["post"]["requestBody"][
        "content"
    ]["application/json"]
    return media


async def _rich_app(client: AsyncClient, headers: dict[str, str]) -> str:
    app_id = await new_app(client, headers, 'Odd <name> & "quotes" ✓ #/{x}', description="")
    await new_api(
        client, headers, app_id, "allKinds", group="g/x {y}", steps=[STEP], params=ALL_KINDS
    )
    digits = [{"name": "pin", "type": "string", "required": True, "pattern": "^[0-9]{4}$"}]
    await new_api(client, headers, app_id, "withPin", steps=[STEP], params=digits)
    await new_api(client, headers, app_id, "open", steps=[STEP], auth={"public": True})
    await new_api(
        client, headers, app_id, "once", steps=[STEP], auth={"requireIdempotencyKey": True}
    )
    token = {"requireToken": True, "mode": "simple", "rights": ["r"]}
    await new_api(client, headers, app_id, "mine", steps=[STEP], auth=token)
    return app_id


async def test_app_openapi_is_valid_and_its_examples_are_calls_the_gateway_takes(
    client: AsyncClient,
) -> None:
    user = await register(client)
    app_id = await _rich_app(client, user.headers)
    data_of(
        await client.post(
            f"/api/v1/apps/{app_id}/versions", json={"bump": "minor"}, headers=user.headers
        )
    )
    for version in ("dev", "latest"):
        document = await _openapi(client, user.headers, app_id, version)
        assert _spec_errors(document) == []
        OpenAPI.model_validate(document)
        for path, item in document["paths"].items():
            media = item["post"]["requestBody"]["content"]["application/json"]
            if "example" in media:
                fastjsonschema.compile(media["schema"])(media["example"])  # its own schema
            elif not path.endswith("#withPin"):
                raise AssertionError(f"{path} has no example")
    document = await _openapi(client, user.headers, app_id)
    example = _media(document, "allKinds")["example"]
    assert set(example["args"]) == {p["name"] for p in ALL_KINDS if p.get("required")}
    called = await client.post("/api/v1/invocations", json=example, headers=user.headers)
    assert called.status_code == 200, called.text
    assert data_of(called)["out"] == {**example["args"], "level": 2}
    # A pattern no placeholder matches gets no example rather than one the gateway refuses.
    assert "example" not in _media(document, "withPin")


async def test_app_openapi_documents_the_version_an_omitted_one_calls(client: AsyncClient) -> None:
    """The gateway calls `latest` when `version` is left out; the dev document said `dev`, so a
    client following it got 404 before the first publish, and the latest version after."""
    user = await register(client)
    app_id = await new_app(client, user.headers, "V")
    await new_api(client, user.headers, app_id, "echo", steps=[STEP])
    body = {"appId": app_id, "api": "echo", "args": {}}
    for version in ("dev", "latest"):
        if version == "latest":
            data_of(
                await client.post(
                    f"/api/v1/apps/{app_id}/versions", json={"bump": "major"}, headers=user.headers
                )
            )
        document = await _openapi(client, user.headers, app_id, version)
        schema = _media(document, "echo")["schema"]["properties"]["version"]
        assert schema["default"] == "latest"
    unpublished_app = await new_app(client, user.headers, "W")
    await new_api(client, user.headers, unpublished_app, "echo", steps=[STEP])
    refused = await client.post(
        "/api/v1/invocations", json={**body, "appId": unpublished_app}, headers=user.headers
    )
    assert_error(refused, 404, "version_not_found")
    assert (await client.post("/api/v1/invocations", json=body, headers=user.headers)).is_success


async def test_app_openapi_marks_a_required_idempotency_key(client: AsyncClient) -> None:
    user = await register(client)
    app_id = await _rich_app(client, user.headers)
    document = await _openapi(client, user.headers, app_id)

    def key_header(api: str) -> dict[str, Any]:
        operation = document["paths"][f"/api/v1/invocations#{api}"]["post"]
        headers: list[dict[str, Any]] = operation["parameters"]
        (header,) = [p for p in headers if p["name"] == "Idempotency-Key"]
        assert header["in"] == "header"
        return header

    assert key_header("once")["required"] is True
    assert key_header("open")["required"] is False
    once = document["paths"]["/api/v1/invocations#once"]["post"]
    assert once["x-permission"]["requireIdempotencyKey"] is True
    assert document["paths"]["/api/v1/invocations#open"]["post"]["x-permission"]["public"] is True
    example = _media(document, "once")["example"]
    refused = await client.post("/api/v1/invocations", json=example, headers=user.headers)
    assert_error(refused, 400, "idempotency_key_required")
    _matches(document, "/api/v1/invocations#once", "post", refused)
    keyed = await client.post(
        "/api/v1/invocations", json=example, headers={**user.headers, "Idempotency-Key": "k-1"}
    )
    assert keyed.status_code == 200, keyed.text
    _matches(document, "/api/v1/invocations#once", "post", keyed)
    page = await client.get(f"/api/v1/apps/{app_id}/docs", headers=user.headers)
    assert "Idempotency-Key required" in page.text
    assert "null" not in page.text  # no empty example for withPin


async def test_app_docs_answer_404_envelopes_and_never_leak_across_workspaces(
    client: AsyncClient,
) -> None:
    owner = await register(client)
    app_id = await _rich_app(client, owner.headers)
    team = await new_workspace(client, owner, "Team")
    team_app = await new_app(client, {**owner.headers, "X-Workspace-Id": team}, "Private")
    stranger = await register(client)
    for path in ("openapi.json", "docs"):
        for version in ("9.9.9", "latest", "DEV", "1.0"):
            unknown = await client.get(
                f"/api/v1/apps/{app_id}/{path}", params={"version": version}, headers=owner.headers
            )
            assert_error(unknown, 404, "version_not_found")
        leaked = await client.get(f"/api/v1/apps/{app_id}/{path}", headers=stranger.headers)
        assert_error(leaked, 404, "app_not_found")
        foreign = await client.get(
            f"/api/v1/apps/{team_app}/{path}",
            headers={**stranger.headers, "X-Workspace-Id": team},
        )
        assert foreign.status_code in (403, 404)
        assert "Private" not in foreign.text
        # Not through the owner's personal workspace either: the app is the team's.
        elsewhere = await client.get(f"/api/v1/apps/{team_app}/{path}", headers=owner.headers)
        assert_error(elsewhere, 404, "app_not_found")
