"""Review of app export/import: round trips, documents users' tools write, bad YAML scalars."""

import asyncio
import codecs
from pathlib import Path
from typing import Any

import orjson
import pytest
from fastapi import FastAPI
from httpx import AsyncClient
from sqlalchemy import text
from typer.testing import CliRunner

from apiforge.builder.cli import apps as apps_cli
from apiforge.core.settings import Settings
from tests.e2e._apps import new_api, new_app, signing_secret
from tests.e2e._keys import app_key
from tests.e2e._plans import on_plan
from tests.e2e._workspaces import assert_error, data_of
from tests.factories import app_client, make_admin, register

runner = CliRunner()
FIELDS = [
    {"name": "email", "type": "string", "required": True, "unique": True},
    {"name": "ssn", "type": "string", "encrypted": True},
    {"name": "age", "type": "integer", "indexed": True, "default": 0},
]
COUNT_STEP = {"id": "total", "type": "count", "collection": "users"}


def _document(**changes: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "format": "apiforge-app",
        "formatVersion": 1,
        "app": {"name": "Imported"},
        "collections": [{"name": "users", "fields": FIELDS}],
        "apis": [{"api": "countUsers", "price": 1, "steps": [COUNT_STEP]}],
        "versions": [],
    }
    return {**base, **changes}


async def _import(
    client: AsyncClient, headers: dict[str, str], content: bytes, content_type: str
) -> Any:
    return await client.post(
        "/api/v1/apps/import", content=content, headers={**headers, "Content-Type": content_type}
    )


async def _nothing_imported(client: AsyncClient, headers: dict[str, str]) -> None:
    assert data_of(await client.get("/api/v1/apps", headers=headers))["totalCount"] == 0
    assert data_of(await client.get("/api/v1/datasets", headers=headers))["totalCount"] == 0


def _without_times(document: dict[str, Any]) -> dict[str, Any]:
    """What a second export repeats of an app without versions or secrets (an import creates
    neither, as documented): everything but the export time."""
    return {k: v for k, v in document.items() if k != "exportedTime"}


async def test_export_import_export_gives_the_same_document(client: AsyncClient) -> None:
    alice, bob = await register(client), await register(client)
    source = await new_app(client, alice.headers, "Shop", config={"currency": "EUR"})
    created = await client.post(
        "/api/v1/datasets",
        json={"appId": source, "name": "users", "description": "people", "fields": FIELDS},
        headers=alice.headers,
    )
    data_of(created)
    await new_api(client, alice.headers, source, "countUsers", price=5, steps=[COUNT_STEP])

    first = await client.get(f"/api/v1/apps/{source}/export", headers=alice.headers)
    flags = first.json()["collections"][0]["fields"][0]
    # JSON booleans, as `enabled` and the `auth` flags of the same document.
    assert [flags[k] for k in ("required", "unique", "indexed", "encrypted")] == [
        True,
        True,
        False,
        False,
    ]
    copy = data_of(await _import(client, bob.headers, first.content, "application/json"))["id"]
    second = await client.get(f"/api/v1/apps/{copy}/export", headers=bob.headers)
    # Byte for byte (1 == True in Python): a diff of two exports shows only real changes.
    assert orjson.dumps(_without_times(second.json())) == orjson.dumps(_without_times(first.json()))
    yaml_first = await client.get(
        f"/api/v1/apps/{source}/export?format=yaml", headers=alice.headers
    )
    yaml_second = await client.get(f"/api/v1/apps/{copy}/export?format=yaml", headers=bob.headers)
    assert _yaml_without_time(yaml_second.text) == _yaml_without_time(yaml_first.text)


def _yaml_without_time(document: str) -> list[str]:
    return [line for line in document.splitlines() if not line.startswith("exportedTime:")]


async def test_exports_hold_no_secret_record_or_key(client: AsyncClient, app: FastAPI) -> None:
    alice = await register(client)
    source = await new_app(client, alice.headers, "Vault", secrets={"API_TOKEN": "tok-0123456789"})
    dataset = data_of(
        await client.post(
            "/api/v1/datasets",
            json={"appId": source, "name": "users", "fields": FIELDS},
            headers=alice.headers,
        )
    )["id"]
    record = await client.post(
        f"/api/v1/datasets/{dataset}/records",
        json={"email": "ada@example.com", "ssn": "078-05-1120"},
        headers=alice.headers,
    )
    data_of(record)
    await new_api(client, alice.headers, source, "countUsers", price=5, steps=[COUNT_STEP])
    key_id, key = await app_key(client, alice, source)
    for fmt in ("json", "yaml"):
        exported = await client.get(
            f"/api/v1/apps/{source}/export?format={fmt}", headers=alice.headers
        )
        assert exported.status_code == 200
        for hidden in (
            "tok-0123456789",
            "078-05-1120",
            "ada@example.com",
            key,
            key_id,
            await signing_secret(app, source),
            source,
            dataset,
        ):
            assert hidden not in exported.text, (fmt, hidden)


@pytest.mark.parametrize(
    "scalar",
    [
        "2024-02-30",  # a bare date with no such day: Python's date() refuses it
        "2024-13-01",
        "2024-01-01 25:00:00",
        "!!int abc",
        "!!int ''",
        "!!float abc",
        "!!bool maybe",
        "!!timestamp soon",
        "1" * 5000,  # past Python's limit on integer digits
    ],
    ids=["feb-30", "month-13", "hour-25", "int", "empty-int", "float", "bool", "timestamp", "huge"],
)
async def test_yaml_scalars_python_cannot_build_are_400(client: AsyncClient, scalar: str) -> None:
    user = await register(client)
    content = (
        f"format: apiforge-app\nformatVersion: 1\napp:\n  name: x\n  config: {{d: {scalar}}}\n"
    )
    response = await _import(client, user.headers, content.encode(), "application/yaml")
    data = assert_error(response, 400, "malformed_document")
    assert data["errors"] == [{"field": "body", "message": "The document is not valid YAML"}]
    await _nothing_imported(client, user.headers)


@pytest.mark.parametrize(
    ("encoding", "bom", "content_type"),
    [
        ("utf-8", codecs.BOM_UTF8, "application/json"),  # Notepad, PowerShell `-Encoding UTF8`
        ("utf-16-le", codecs.BOM_UTF16_LE, "application/json"),  # PowerShell 5 `>`
        ("utf-16-be", codecs.BOM_UTF16_BE, "application/json"),
        ("utf-32-le", codecs.BOM_UTF32_LE, "application/json"),
        ("utf-8", codecs.BOM_UTF8, "application/yaml"),
        ("utf-16-le", codecs.BOM_UTF16_LE, "application/yaml"),
    ],
    ids=["json-utf8", "json-utf16le", "json-utf16be", "json-utf32le", "yaml-utf8", "yaml-utf16le"],
)
async def test_documents_with_a_byte_order_mark_import(
    client: AsyncClient, encoding: str, bom: bytes, content_type: str
) -> None:
    alice, bob = await register(client), await register(client)
    source = await new_app(client, alice.headers, "Café", config={"greeting": "héllo ✓"})
    await new_api(client, alice.headers, source, "ping")
    fmt = "yaml" if content_type.endswith("yaml") else "json"
    exported = await client.get(f"/api/v1/apps/{source}/export?format={fmt}", headers=alice.headers)
    content = bom + exported.content.decode().encode(encoding)
    copy = data_of(await _import(client, bob.headers, content, content_type))["id"]
    imported = data_of(await client.get(f"/api/v1/apps/{copy}", headers=bob.headers))
    assert (imported["name"], imported["config"]) == ("Café", {"greeting": "héllo ✓"})
    assert imported["apiCount"] == 1


@pytest.mark.parametrize(
    ("content", "content_type"),
    [
        ('{"app": {"name": "é"}}'.encode("latin-1"), "application/json"),
        ('{"app": {"name": "é"}}'.encode("utf-16-le"), "application/json"),  # no mark
        (codecs.BOM_UTF8 + b"  \n", "application/json"),
        (codecs.BOM_UTF16_LE, "application/yaml"),
        (codecs.BOM_UTF16_LE + b"\x00\xd8", "application/json"),  # a lone surrogate
    ],
    ids=["latin1", "utf16-unmarked", "utf8-blank", "utf16-empty", "lone-surrogate"],
)
async def test_other_encodings_and_empty_marked_documents_are_400(
    client: AsyncClient, content: bytes, content_type: str
) -> None:
    user = await register(client)
    assert_error(
        await _import(client, user.headers, content, content_type), 400, "malformed_document"
    )
    await _nothing_imported(client, user.headers)


async def _index_names(app: FastAPI) -> set[str]:
    async with app.state.engine.connect() as conn:
        if conn.dialect.name == "sqlite":
            rows = await conn.execute(text("SELECT name FROM sqlite_master WHERE type = 'index'"))
        else:
            rows = await conn.execute(text("SELECT indexname FROM pg_indexes"))
        return {str(row[0]) for row in rows}


async def test_refused_imports_leave_no_app_collection_or_index(
    client: AsyncClient, app: FastAPI
) -> None:
    user = await register(client)
    before = await _index_names(app)
    late_failure = _document(
        apis=[
            {"api": "countUsers", "price": 1, "steps": [COUNT_STEP]},
            {"api": "zBroken", "steps": [{"id": "s", "type": "count", "collection": "nope"}]},
        ]
    )
    response = await client.post("/api/v1/apps/import", json=late_failure, headers=user.headers)
    data = assert_error(response, 400, "invalid_definition")
    assert data["errors"][0]["field"] == "apis.1.steps.s.collection"
    await _nothing_imported(client, user.headers)
    assert await _index_names(app) == before

    admin = await make_admin(app, client)
    await on_plan(client, admin, user.workspace_id, apps=1)
    kept = await new_app(client, user.headers, "The one app")
    refused = await client.post("/api/v1/apps/import", json=_document(), headers=user.headers)
    assert assert_error(refused, 403, "quota_exceeded")["quota"] == "apps"
    listed = data_of(await client.get("/api/v1/apps", headers=user.headers))
    assert [a["id"] for a in listed["list"]] == [kept]
    assert data_of(await client.get("/api/v1/datasets", headers=user.headers))["totalCount"] == 0
    assert await _index_names(app) == before


def test_cli_refuses_a_bad_yaml_date_without_a_traceback(
    settings: Settings, tmp_path: Path
) -> None:
    """Sync test: the command runs its own event loop."""

    async def setup() -> str:
        async with app_client(settings) as (_application, http):
            return (await register(http)).workspace_id

    workspace_id = asyncio.run(setup())
    env = {
        "APIFORGE_DATA_DIR": str(settings.data_dir),
        "APIFORGE_DATABASE_URL": settings.database_url,
        "APIFORGE_SECRET_KEY": settings.secret_key,
        "APIFORGE_REDIS_URL": None,
    }
    bad = tmp_path / "app.yaml"
    bad.write_text(
        "format: apiforge-app\nformatVersion: 1\napp: {name: x, config: {d: 2024-02-30}}\n"
    )
    result = runner.invoke(apps_cli, ["import", str(bad), "--workspace", workspace_id], env=env)
    assert result.exit_code == 1, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert "The document is not valid YAML" in result.output
    marked = tmp_path / "marked.json"
    marked.write_bytes(codecs.BOM_UTF8 + orjson.dumps(_document(apis=[], collections=[])))
    result = runner.invoke(apps_cli, ["import", str(marked), "--workspace", workspace_id], env=env)
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("imported as app ")
