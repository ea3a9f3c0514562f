"""Review: API names that differ only by letter case (`getPost`, `GetPost`) were both accepted,
and their operation ids folded into one method name in generated clients (`get_post`). A new
such name is refused (409 `api_exists`); an app that already holds a pair (saved before, or
imported from its export) still gets a document with distinct ids."""

import copy
import json
import re
from pathlib import Path
from typing import Any

from httpx import AsyncClient
from openapi_spec_validator import OpenAPIV31SpecValidator

from tests.e2e._apps import apis_of, new_api, new_app, set_step
from tests.e2e._workspaces import assert_error, data_of
from tests.factories import register

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "blog-app.json"


def _snake(name: str) -> str:
    """How generators turn an operation id into a function name (`getManyPost` -> ...)."""
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


async def test_a_name_differing_only_by_case_is_refused_on_create_and_rename(
    client: AsyncClient,
) -> None:
    headers = (await register(client)).headers
    app_id = await new_app(client, headers)
    steps = [set_step("a", 1)]
    own = await new_api(client, headers, app_id, "getPost", steps=steps)
    other = await new_api(client, headers, app_id, "listPosts", steps=steps)
    before = await apis_of(client, headers, app_id)

    created = await client.post(
        f"/api/v1/apps/{app_id}/apis", json={"api": "GetPost", "steps": steps}, headers=headers
    )
    assert_error(created, 409, "api_exists")
    assert "named getPost" in created.json()["message"]
    renamed = await client.patch(
        f"/api/v1/apps/{app_id}/apis/{other}", json={"api": "GETPOST"}, headers=headers
    )
    assert_error(renamed, 409, "api_exists")
    assert await apis_of(client, headers, app_id) == before

    # Its own name in another case is no clash, and the old spelling is then free again.
    recased = await client.patch(
        f"/api/v1/apps/{app_id}/apis/{own}", json={"api": "GetPost"}, headers=headers
    )
    assert data_of(recased)["api"] == "GetPost"
    assert data_of(
        await client.patch(
            f"/api/v1/apps/{app_id}/apis/{other}", json={"api": "listPost"}, headers=headers
        )
    )


async def test_an_app_holding_a_case_pair_documents_distinct_operation_ids(
    client: AsyncClient,
) -> None:
    headers = (await register(client)).headers
    blog: dict[str, Any] = json.loads(EXAMPLE.read_text(encoding="utf-8"))
    twin = copy.deepcopy(next(api for api in blog["apis"] if api["api"] == "getManyPost"))
    blog["apis"].append({**twin, "api": "GetManyPost"})
    app_id = data_of(await client.post("/api/v1/apps/import", json=blog, headers=headers))["id"]
    for version in ("dev", None):
        if version is None:
            bump = {"bump": "major"}
            data_of(
                await client.post(f"/api/v1/apps/{app_id}/versions", json=bump, headers=headers)
            )
        query = f"?version={version or '1.0.0'}"
        response = await client.get(f"/api/v1/apps/{app_id}/openapi.json{query}", headers=headers)
        document = response.json()
        assert list(OpenAPIV31SpecValidator(document).iter_errors()) == []
        ids = {
            path.split("#", 1)[1]: item["post"]["operationId"]
            for path, item in document["paths"].items()
        }
        assert ids["getManyPost"] == "getManyPost"  # the camelCase name keeps its method
        assert ids["GetManyPost"] == "GetManyPost_2"
        assert ids["getPost"] == "getPost"
        assert len({_snake(i) for i in ids.values()}) == len(ids) == 7


async def test_the_docs_page_names_each_api_of_a_case_pair(client: AsyncClient) -> None:
    headers = (await register(client)).headers
    blog: dict[str, Any] = json.loads(EXAMPLE.read_text(encoding="utf-8"))
    twin = copy.deepcopy(next(api for api in blog["apis"] if api["api"] == "getPost"))
    blog["apis"].append({**twin, "api": "GetPost"})
    app_id = data_of(await client.post("/api/v1/apps/import", json=blog, headers=headers))["id"]
    page = (await client.get(f"/api/v1/apps/{app_id}/docs?version=dev", headers=headers)).text
    assert "<a href='#api-GetPost'>GetPost</a>" in page
    assert "<article id='api-GetPost'>" in page
    assert "GetPost_2" not in page
