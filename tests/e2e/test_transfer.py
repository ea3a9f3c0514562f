"""Export an app from one workspace and import it into another: HTTP (JSON, YAML) and the CLI."""

import asyncio
from pathlib import Path
from typing import Any

import pytest
import yaml
from fastapi import FastAPI
from httpx import ASGITransport, AsyncClient
from typer.testing import CliRunner

from apiforge.app import create_app, shutdown
from apiforge.builder.cli import apps as apps_cli
from apiforge.core.settings import Settings
from tests.e2e._apps import apis_of, app_state, in_workspace, new_api, new_app, signing_secret
from tests.e2e._workspaces import INJECTION, SCRIPT, assert_error, data_of, team
from tests.factories import User, register

runner = CliRunner()
COUNT_STEP = {"id": "total", "type": "count", "collection": "posts"}
FIELDS = [
    {"name": "title", "type": "string", "required": True},
    {"name": "slug", "type": "string", "unique": True},
    {"name": "secretNote", "type": "string", "encrypted": True},
]


async def _build_source(client: AsyncClient, user: User) -> str:
    """An app with config, a secret, a collection, two APIs and two published versions."""
    h = user.headers
    app_id = await new_app(
        client,
        h,
        "Blog",
        description=SCRIPT,
        visibility="public",
        config={"pageSize": 20},
        secrets={"MAIL_KEY": "mail-secret-value"},
    )
    data_of(
        await client.post(
            "/api/v1/datasets", json={"appId": app_id, "name": "posts", "fields": FIELDS}, headers=h
        )
    )
    await new_api(
        client,
        h,
        app_id,
        "countPosts",
        name=INJECTION,
        group="posts",
        price=3,
        steps=[COUNT_STEP],
        auth={"requireToken": True, "mode": "simple", "rights": ["reader"]},
    )
    await new_api(client, h, app_id, "ping", params=[{"name": "q", "required": True}])
    for bump, notes in [("major", "First release"), ("minor", "Second release")]:
        data_of(
            await client.post(
                f"/api/v1/apps/{app_id}/versions", json={"bump": bump, "notes": notes}, headers=h
            )
        )
    return app_id


def _comparable(apis: dict[str, Any]) -> dict[str, Any]:
    return {
        name: {k: v for k, v in api.items() if k not in ("id", "createdTime", "updatedTime")}
        for name, api in apis.items()
    }


async def _collections(client: AsyncClient, user: User, app_id: str) -> list[dict[str, Any]]:
    page = data_of(await client.get(f"/api/v1/datasets?appId={app_id}", headers=user.headers))
    return [{"name": c["name"], "fields": c["fields"]} for c in page["list"]]


async def test_export_then_import_into_another_workspace(client: AsyncClient, app: FastAPI) -> None:
    alice = await register(client)
    bob = await register(client)
    source = await _build_source(client, alice)

    response = await client.get(f"/api/v1/apps/{source}/export", headers=alice.headers)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/json")
    assert response.headers["content-disposition"] == (
        "attachment; filename=\"Blog.json\"; filename*=UTF-8''Blog.json"
    )
    document = response.json()
    assert "code" not in document  # a file, not an envelope
    assert document["format"] == "apiforge-app"
    assert document["app"]["secretNames"] == ["MAIL_KEY"]
    assert [(v["version"], v["notes"]) for v in document["versions"]] == [
        ("1.0.0", "First release"),
        ("1.1.0", "Second release"),
    ]
    assert [a["api"] for a in document["apis"]] == ["countPosts", "ping"]
    for hidden in [
        source,
        "mail-secret-value",
        await signing_secret(app, source),
        alice.workspace_id,
    ]:
        assert hidden not in response.text

    imported = await client.post(
        "/api/v1/apps/import",
        content=response.content,
        headers={**bob.headers, "Content-Type": "application/json"},
    )
    target = data_of(imported)["id"]
    assert target != source
    copy = data_of(await client.get(f"/api/v1/apps/{target}", headers=bob.headers))
    assert copy["workspaceId"] == bob.workspace_id
    assert (copy["name"], copy["description"], copy["visibility"]) == ("Blog", SCRIPT, "public")
    assert copy["config"] == {"pageSize": 20}
    assert copy["secretNames"] == []  # values never travel: set them again
    assert copy["latestVersion"] is None  # the APIs arrive on dev
    assert _comparable(await apis_of(client, bob.headers, target)) == _comparable(
        await apis_of(client, alice.headers, source)
    )
    assert await _collections(client, bob, target) == await _collections(client, alice, source)
    assert await signing_secret(app, target) != await signing_secret(app, source)
    # The source is untouched and still Alice's alone.
    assert_error(
        await client.get(f"/api/v1/apps/{source}", headers=bob.headers), 404, "app_not_found"
    )
    assert (
        data_of(await client.get(f"/api/v1/apps/{source}", headers=alice.headers))["apiCount"] == 2
    )


async def test_yaml_export_imports_too(client: AsyncClient) -> None:
    alice = await register(client)
    bob = await register(client)
    source = await _build_source(client, alice)
    response = await client.get(f"/api/v1/apps/{source}/export?format=yaml", headers=alice.headers)
    assert response.headers["content-type"].startswith("application/yaml")
    assert response.headers["content-disposition"] == (
        "attachment; filename=\"Blog.yaml\"; filename*=UTF-8''Blog.yaml"
    )
    assert yaml.safe_load(response.text)["versions"][1]["notes"] == "Second release"
    imported = await client.post(
        "/api/v1/apps/import",
        content=response.content,
        headers={**bob.headers, "Content-Type": "application/yaml"},
    )
    target = data_of(imported)["id"]
    assert sorted(await apis_of(client, bob.headers, target)) == ["countPosts", "ping"]
    bad_format = await client.get(f"/api/v1/apps/{source}/export?format=xml", headers=alice.headers)
    assert bad_format.status_code == 400


def _document(**changes: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "format": "apiforge-app",
        "formatVersion": 1,
        "app": {"name": "Imported"},
        "collections": [{"name": "posts", "fields": [{"name": "title", "type": "string"}]}],
        "apis": [{"api": "countPosts", "price": 1, "steps": [COUNT_STEP]}],
        "versions": [],
    }
    return {**base, **changes}


@pytest.mark.parametrize(
    ("document", "reason", "field"),
    [
        (_document(format="other"), "invalid_input", "format"),
        (_document(formatVersion=2), "invalid_input", "formatVersion"),
        (_document(app={}), "missing_parameters", "app.name"),
        (_document(extra=1), "invalid_input", "extra"),
        (
            _document(apis=[{"api": "x", "steps": [{"id": "a", "type": "nope"}]}]),
            "invalid_definition",
            "apis.0.steps.a.type",
        ),
        (
            _document(apis=[{"api": "countPosts", "price": 0, "steps": [COUNT_STEP]}]),
            "price_below_cost",
            "apis.0.price",
        ),
        (_document(apis=[{"api": "a"}, {"api": "a"}]), "invalid_input", "apis.1.api"),
        (_document(collections=[]), "invalid_definition", "apis.0.steps.total.collection"),
        (
            _document(
                collections=[{"name": "posts", "fields": [{"name": "id", "type": "string"}]}]
            ),
            "invalid_input",
            "collections.0.fields.0.name",
        ),
        (
            _document(collections=[{"name": "posts"}, {"name": "posts"}]),
            "invalid_input",
            "collections.1.name",
        ),
    ],
)
async def test_bad_documents_import_nothing(
    client: AsyncClient, document: dict[str, Any], reason: str, field: str
) -> None:
    user = await register(client)
    response = await client.post("/api/v1/apps/import", json=document, headers=user.headers)
    data = assert_error(response, 400, reason)
    assert field in [e["field"] for e in data["errors"]], data
    assert data_of(await client.get("/api/v1/apps", headers=user.headers))["totalCount"] == 0
    datasets = data_of(await client.get("/api/v1/datasets", headers=user.headers))
    assert datasets["totalCount"] == 0


@pytest.mark.parametrize(
    ("content", "content_type"),
    [
        (b"", "application/json"),
        (b'{"format": ', "application/json"),
        (b"[1, 2]", "application/json"),
        (b"app: &a {name: x}\ncopy: *a\n", "application/yaml"),
        (b"\xff\xfe", "application/yaml"),
    ],
)
async def test_malformed_import_bodies_are_400(
    client: AsyncClient, content: bytes, content_type: str
) -> None:
    user = await register(client)
    response = await client.post(
        "/api/v1/apps/import",
        content=content,
        headers={**user.headers, "Content-Type": content_type},
    )
    assert response.status_code == 400, response.text
    assert data_of(await client.get("/api/v1/apps", headers=user.headers))["totalCount"] == 0


async def test_import_needs_editor_and_export_works_for_viewers(client: AsyncClient) -> None:
    owner, workspace_id, members = await team(client, "viewer")
    viewer = in_workspace(members["viewer"], workspace_id)
    source = await new_app(client, in_workspace(owner, workspace_id), "Team app")
    await new_api(client, in_workspace(owner, workspace_id), source, "ping")
    exported = await client.get(f"/api/v1/apps/{source}/export", headers=viewer)
    assert exported.status_code == 200
    before = await app_state(client, viewer, source)
    refused = await client.post(
        "/api/v1/apps/import",
        content=exported.content,
        headers={**viewer, "Content-Type": "application/json"},
    )
    assert_error(refused, 403, "insufficient_role")
    listed = data_of(await client.get("/api/v1/apps", headers=viewer))
    assert [a["id"] for a in listed["list"]] == [source]
    assert await app_state(client, viewer, source) == before


# --- CLI ----------------------------------------------------------------------------------------


def _cli_env(settings: Settings) -> dict[str, str | None]:
    return {
        "APIFORGE_DATA_DIR": str(settings.data_dir),
        "APIFORGE_DATABASE_URL": settings.database_url,
        "APIFORGE_SECRET_KEY": settings.secret_key,
        "APIFORGE_REDIS_URL": None,
    }


async def _with_client(settings: Settings, work: Any) -> Any:
    application = create_app(settings)
    try:
        transport = ASGITransport(app=application, raise_app_exceptions=False)
        async with AsyncClient(transport=transport, base_url="http://testserver") as http:
            return await work(http)
    finally:
        await shutdown(application)


def test_cli_exports_and_imports_an_app(settings: Settings, tmp_path: Path) -> None:
    """Sync test: the commands run their own event loop."""

    async def setup(http: AsyncClient) -> tuple[User, User, str]:
        alice, bob = await register(http), await register(http)
        return alice, bob, await _build_source(http, alice)

    _alice, bob, source = asyncio.run(_with_client(settings, setup))
    env = _cli_env(settings)
    for fmt in ("json", "yaml"):
        out = tmp_path / f"blog.{fmt}"
        exported = runner.invoke(
            apps_cli, ["export", source, "--format", fmt, "--out", str(out)], env=env
        )
        assert exported.exit_code == 0, exported.output
        assert "mail-secret-value" not in out.read_text()
        imported = runner.invoke(
            apps_cli, ["import", str(out), "--workspace", bob.workspace_id], env=env
        )
        assert imported.exit_code == 0, imported.output
        assert imported.stdout.startswith("imported as app ")

    to_stdout = runner.invoke(apps_cli, ["export", source], env=env)
    assert to_stdout.exit_code == 0
    assert '"Second release"' in to_stdout.stdout

    async def check(http: AsyncClient) -> list[dict[str, Any]]:
        page = data_of(await http.get("/api/v1/apps", headers=bob.headers))
        return list(page["list"])

    copies = asyncio.run(_with_client(settings, check))
    assert [(a["name"], a["apiCount"]) for a in copies] == [("Blog", 2), ("Blog", 2)]

    missing = runner.invoke(apps_cli, ["export", "00000000000000000000000000"], env=env)
    assert missing.exit_code == 1
    assert "App not found" in missing.output
    bad = tmp_path / "bad.json"
    bad.write_text('{"format": "apiforge-app", "app": {}}')
    refused = runner.invoke(
        apps_cli, ["import", str(bad), "--workspace", bob.workspace_id], env=env
    )
    assert refused.exit_code == 1
    assert "app.name" in refused.output
    nowhere = runner.invoke(
        apps_cli, ["import", str(tmp_path / "blog.json"), "--workspace", "nope"], env=env
    )
    assert nowhere.exit_code == 1
    assert "Workspace not found" in nowhere.output
    assert runner.invoke(apps_cli, ["export", source, "--format", "xml"], env=env).exit_code == 2


async def test_an_app_named_in_chinese_downloads_under_its_name(client: AsyncClient) -> None:
    """The exact name in RFC 8187 `filename*` (browsers use it), an ASCII one for the rest."""
    alice = await register(client)
    app_id = await new_app(client, alice.headers, "博客 Blog")
    response = await client.get(f"/api/v1/apps/{app_id}/export", headers=alice.headers)
    assert response.status_code == 200
    assert response.headers["content-disposition"] == (
        "attachment; filename=\"Blog.json\"; filename*=UTF-8''%E5%8D%9A%E5%AE%A2%20Blog.json"
    )
