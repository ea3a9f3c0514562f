"""Review: the platform document's `security` must list exactly the credentials each operation
takes. Account-level routes listed the `ws-` workspace key although they answer it 403
`workspace_key_not_allowed`, and step pricing was tagged `builder` (generated clients put it in
their builder module). Every operation is called with every scheme it lists, so the declaration
and the behaviour cannot drift apart."""

import re
from typing import Any

from httpx import AsyncClient

from tests.e2e._keys import create_key
from tests.factories import register

DUMMY_ID = "0" * 26
# Refusals that say the credential itself is not taken here (a role or a missing record is not).
CREDENTIAL_REFUSED = {401}
KEY_SCHEMES = {"workspaceKey", "apiKey"}


def _operations(document: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    found = [
        (method, path, operation)
        for path, item in document["paths"].items()
        for method, operation in item.items()
        if isinstance(operation, dict) and "responses" in operation and operation.get("security")
    ]
    # Signing out ends the console session the later calls use.
    return sorted(found, key=lambda found: found[1] == "/api/v1/auth/logout")


def _url(path: str, workspace_id: str) -> str:
    """The path with its parameters filled: the caller's own workspace (another is 404 before
    any credential check) and ids of nothing for the rest."""
    path = path.split("#", 1)[0].replace("{workspace_id}", workspace_id)
    return re.sub(r"\{[^}]+\}", DUMMY_ID, path)


def _reason(response: Any) -> str | None:
    try:
        data = response.json().get("data")
    except ValueError:
        return None
    return data.get("error") if isinstance(data, dict) else None


async def test_every_operation_takes_exactly_the_credentials_it_lists(
    client: AsyncClient,
) -> None:
    user = await register(client)
    _, key = await create_key(client, user.headers, type="ws", role="admin")
    document = (await client.get("/openapi.json")).json()
    wrong = []
    for method, path, operation in _operations(document):
        listed = {name for requirement in operation["security"] for name in requirement}
        url = _url(path, user.workspace_id)
        body: dict[str, Any] | None = {} if method in ("post", "put", "patch") else None
        by_key = await client.request(method, url, json=body, headers={"X-Api-Key": key})
        key_refused = by_key.status_code in CREDENTIAL_REFUSED or (
            _reason(by_key) == "workspace_key_not_allowed"
        )
        if key_refused != (not listed & KEY_SCHEMES):
            wrong.append((method, path, "ws- key", by_key.status_code, _reason(by_key)))
        if "consoleToken" in listed:
            by_token = await client.request(method, url, json=body, headers=user.headers)
            if by_token.status_code in CREDENTIAL_REFUSED:
                wrong.append((method, path, "console", by_token.status_code, _reason(by_token)))
    assert wrong == []


async def test_key_refusing_operations_list_no_workspace_key(client: AsyncClient) -> None:
    """Examples of what `test_every_operation_takes_exactly_the_credentials_it_lists` covers."""
    paths = (await client.get("/openapi.json")).json()["paths"]
    console_only: list[dict[str, list[str]]] = [{"consoleToken": []}]
    assert paths["/api/v1/user/profile"]["get"]["security"] == console_only
    assert paths["/api/v1/workspaces"]["get"]["security"] == console_only
    assert paths["/api/v1/api-keys"]["post"]["security"] == console_only
    assert paths["/api/v1/workspaces/{workspace_id}/members"]["post"]["security"] == console_only
    assert paths["/api/v1/api-keys"]["get"]["security"] == [
        {"consoleToken": []},
        {"workspaceKey": []},
    ]


async def test_step_pricing_is_tagged_admin_only(client: AsyncClient) -> None:
    paths = (await client.get("/openapi.json")).json()["paths"]
    assert paths["/api/v1/admin/pricing"]["get"]["tags"] == ["admin"]
    assert paths["/api/v1/admin/pricing/{step_type}"]["put"]["tags"] == ["admin"]
