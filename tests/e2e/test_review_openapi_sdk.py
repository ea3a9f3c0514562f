"""Review: SDK generators (openapi-python-client, openapi-typescript) read both OpenAPI
documents. They need short unique operation ids (method names), one component per schema name
(module-qualified duplicates fold back into a clash and drop the operations' typed answers), and
declared security schemes (without them no credentials are added). docs/sdks.md's names are
checked against the documents (the generators are not run here)."""

import json
import re
from collections import Counter
from pathlib import Path
from typing import Any

from httpx import AsyncClient
from openapi_spec_validator import OpenAPIV31SpecValidator

from tests.e2e._workspaces import data_of
from tests.factories import register

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "blog-app.json"
SDKS_DOC = ROOT / "docs" / "sdks.md"
SNAKE = re.compile(r"^[a-z][a-z0-9]*(_[a-z0-9]+)*$")
# What needs no caller: signing in, and what probes and monitors read.
ANONYMOUS = {
    ("get", "/api/v1/version"),
    ("get", "/healthz"),
    ("get", "/readyz"),
    ("get", "/metrics"),  # its own optional token (APIFORGE_METRICS_TOKEN)
    ("post", "/api/v1/auth/register"),
    ("post", "/api/v1/auth/login"),
    ("post", "/api/v1/auth/refresh"),
}


def _operations(document: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (method, path, operation)
        for path, item in document["paths"].items()
        for method, operation in item.items()
        if isinstance(operation, dict) and "responses" in operation
    ]


def _snake(name: str) -> str:
    """How generators turn an operation id into a function name (`getManyPost` -> ...)."""
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


async def _platform(client: AsyncClient) -> dict[str, Any]:
    document: dict[str, Any] = (await client.get("/openapi.json")).json()
    assert list(OpenAPIV31SpecValidator(document).iter_errors()) == []
    return document


async def _blog(client: AsyncClient) -> dict[str, Any]:
    """The example blog app, published, and its document."""
    headers = (await register(client)).headers
    blog = json.loads(EXAMPLE.read_text(encoding="utf-8"))
    app_id = data_of(await client.post("/api/v1/apps/import", json=blog, headers=headers))["id"]
    data_of(
        await client.post(
            f"/api/v1/apps/{app_id}/versions", json={"bump": "major"}, headers=headers
        )
    )
    response = await client.get(
        f"/api/v1/apps/{app_id}/openapi.json?version=1.0.0", headers=headers
    )
    document: dict[str, Any] = response.json()
    assert list(OpenAPIV31SpecValidator(document).iter_errors()) == []
    return document


async def test_platform_operation_ids_are_short_unique_snake_case(client: AsyncClient) -> None:
    """FastAPI's default ids carry the path and method (`list_apps_api_v1_apps_get`), and two
    routers' `get_version` shared one name."""
    ids = [operation["operationId"] for _, _, operation in _operations(await _platform(client))]
    assert [name for name, seen in Counter(ids).items() if seen > 1] == []
    assert [name for name in ids if not SNAKE.match(name) or "_api_v1_" in name] == []
    assert {"login", "list_apps", "create_app", "get_version", "get_platform_version"} <= set(ids)


async def test_platform_schema_names_are_not_module_qualified(client: AsyncClient) -> None:
    """Two models named `VersionRead` became `apiforge__system__schemas__VersionRead` and
    `apiforge__builder__schemas__VersionRead`: openapi-python-client folds both back to
    `VersionRead`, refuses the duplicate and drops five operations' typed answers."""
    names = (await _platform(client))["components"]["schemas"]
    assert [name for name in names if name.startswith("apiforge__")] == []
    folded = Counter(re.sub(r"[^A-Za-z0-9]", "", name).lower() for name in names)
    assert [name for name, seen in folded.items() if seen > 1] == []


async def test_platform_declares_its_security_on_every_operation_with_a_caller(
    client: AsyncClient,
) -> None:
    document = await _platform(client)
    schemes = document["components"]["securitySchemes"]
    assert schemes["consoleToken"] == {
        "type": "http",
        "scheme": "bearer",
        "description": schemes["consoleToken"]["description"],
    }
    assert (schemes["workspaceKey"]["in"], schemes["workspaceKey"]["name"]) == (
        "header",
        "X-Api-Key",
    )
    for method, path, operation in _operations(document):
        security = operation.get("security", [])
        if (method, path) in ANONYMOUS:
            assert security == [], (method, path)
            continue
        assert security, (method, path)
        assert {name for requirement in security for name in requirement} <= set(schemes)
    invoke = document["paths"]["/api/v1/invocations"]["post"]["security"]
    assert invoke == [{"apiKey": []}, {"consoleToken": []}]
    assert schemes["apiKey"]["name"] == "X-Api-Key"
    assert document["paths"]["/api/v1/apps"]["get"]["security"] == [
        {"consoleToken": []},
        {"workspaceKey": []},
    ]


async def test_platform_operations_carry_one_tag(client: AsyncClient) -> None:
    """Generated clients put an operation in the module of its first tag: one tag each. The
    version and transfer routes were tagged `builder` twice (their own router and the builder
    router that includes it); the money charts `billing` and `usage`, step pricing `builder`
    and `admin`."""
    for method, path, operation in _operations(await _platform(client)):
        assert len(operation.get("tags", [])) == 1, (method, path, operation.get("tags"))
    paths = (await _platform(client))["paths"]
    assert paths["/api/v1/usage/spend"]["get"]["tags"] == ["usage"]
    assert paths["/api/v1/admin/pricing"]["get"]["tags"] == ["admin"]


async def test_app_document_gives_generators_ids_envelopes_and_credentials(
    client: AsyncClient,
) -> None:
    document = await _blog(client)
    schemes = document["components"]["securitySchemes"]
    operations = _operations(document)
    ids = [operation["operationId"] for _, _, operation in operations]
    assert len({_snake(name) for name in ids}) == len(ids) == 6
    for _, _, operation in operations:
        assert all(SNAKE.match(_snake(name)) for name in ids)
        assert {name for requirement in operation["security"] for name in requirement} <= set(
            schemes
        )
        ok = operation["responses"]["200"]["content"]["application/json"]["schema"]
        assert ok["required"] == ["code", "message", "data"]
        for status, response in operation["responses"].items():
            if status != "200":
                schema = response["content"]["application/json"]["schema"]
                assert schema == {"$ref": "#/components/schemas/Error"}, status
    assert (schemes["apiKey"]["in"], schemes["apiKey"]["name"]) == ("header", "X-Api-Key")


async def test_sdks_doc_names_modules_and_models_the_documents_generate(
    client: AsyncClient,
) -> None:
    """Every `from <pkg>.api.<tag> import <op>` in docs/sdks.md is an operation of that tag, and
    every body model it imports is what the generator names the operation's body."""
    text = SDKS_DOC.read_text(encoding="utf-8")
    documents = {"blog_client": await _blog(client), "forge_client": await _platform(client)}
    imports = re.findall(r"^from (\w+)\.api\.(\w+) import (\w+)$", text, re.MULTILINE)
    assert len(imports) == 3
    for package, tag, function in imports:
        found = {
            (_snake(operation["tags"][0]), _snake(operation["operationId"]))
            for _, _, operation in _operations(documents[package])
        }
        assert (tag, function) in found, (package, tag, function)
    assert "from blog_client.models import GetManyPostBody, GetManyPostBodyArgs" in text
    blog = documents["blog_client"]["paths"]["/api/v1/invocations#getManyPost"]["post"]
    assert blog["operationId"] == "getManyPost"
    assert (
        "pageNo"
        in blog["requestBody"]["content"]["application/json"]["schema"]["properties"]["args"][
            "properties"
        ]
    )
    login = documents["forge_client"]["paths"]["/api/v1/auth/login"]["post"]
    body = login["requestBody"]["content"]["application/json"]["schema"]
    assert body == {"$ref": "#/components/schemas/LoginInput"}
    assert "from forge_client.models import LoginInput" in text
