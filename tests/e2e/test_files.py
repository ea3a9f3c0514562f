"""`/api/v1/files` and `/api/v1/multiple-files`: uploads streamed to disk with their md5 checked,
downloads with integrity headers, limits that store nothing, tenant isolation, roles, and the
plan's `uploadsPerMonth` quota (refusals noted, `/user/plans` usage and warnings)."""

import asyncio
import base64
import hashlib
import os
import re
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from fastapi import FastAPI
from httpx import AsyncClient, Response
from sqlalchemy import func, select

from apiforge.core.settings import Settings
from apiforge.files.models import File
from apiforge.files.storage import FileStorage, StagedFile
from apiforge.idempotency import spool
from apiforge.plans.meter import quota_meter
from apiforge.tools.clock import utcnow
from apiforge.tools.ids import is_id
from tests.e2e._keys import create_key
from tests.e2e._plans import on_plan
from tests.e2e._workspaces import assert_error, data_of, team
from tests.factories import User, make_admin, register

LIMIT = 64 * 1024  # APIFORGE_MAX_UPLOAD_BYTES in this module
MAX_FILES = 3  # APIFORGE_MAX_UPLOAD_FILES in this module
FileTuple = tuple[str, bytes, str]


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"max_upload_bytes": LIMIT, "max_upload_files": MAX_FILES})


def _md5(data: bytes) -> str:
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


async def _upload(
    client: AsyncClient,
    user: User,
    name: str,
    data: bytes,
    content_type: str = "application/octet-stream",
    md5: str | None = None,
    headers: dict[str, str] | None = None,
) -> Response:
    form = {} if md5 is None else {"md5": md5}
    return await client.post(
        "/api/v1/files",
        files={"file": (name, data, content_type)},
        data=form,
        headers=headers or user.headers,
    )


async def _upload_many(
    client: AsyncClient, user: User, files: list[FileTuple], md5s: list[str] | None = None
) -> Response:
    return await client.post(
        "/api/v1/multiple-files",
        files=[("files", f) for f in files],
        data={"md5": md5s} if md5s is not None else {},
        headers=user.headers,
    )


def _stored(settings: Settings) -> list[Path]:
    """Every file under the files directory, staged ones included."""
    root = settings.resolved_files_dir
    return sorted(p for p in root.rglob("*") if p.is_file()) if root.exists() else []


async def _rows(app: FastAPI, workspace_id: str | None = None) -> int:
    async with app.state.engine.connect() as connection:
        stmt = select(func.count()).select_from(File)
        if workspace_id is not None:
            stmt = stmt.where(File.workspace_id == workspace_id)
        return int(await connection.scalar(stmt) or 0)


async def _listed(client: AsyncClient, headers: dict[str, str], **query: Any) -> dict[str, Any]:
    page: dict[str, Any] = data_of(await client.get("/api/v1/files", params=query, headers=headers))
    return page


# --- round trip -------------------------------------------------------------------------------


async def test_upload_then_download_returns_the_same_bytes_and_integrity_headers(
    client: AsyncClient, settings: Settings
) -> None:
    user = await register(client)
    data = bytes(range(256)) * 100  # binary, 25,600 bytes
    digest = _md5(data)
    uploaded = data_of(await _upload(client, user, "report.bin", data, "image/png", md5=digest))
    file_id = uploaded["id"]
    assert is_id(file_id)
    assert uploaded == {
        "id": file_id,
        "url": f"/api/v1/files/{file_id}",
        "name": "report.bin",
        "size": len(data),
        "md5": digest,
        "contentType": "image/png",
        "createdBy": user.account_id,
        "createdTime": uploaded["createdTime"],
    }
    assert uploaded["createdTime"].endswith("Z")

    response = await client.get(uploaded["url"], headers=user.headers)
    assert response.status_code == 200
    assert response.content == data
    assert response.headers["content-type"] == "image/png"
    assert response.headers["content-length"] == str(len(data))
    assert response.headers["etag"] == f'"{digest}"'
    assert response.headers["x-content-md5"] == digest
    assert base64.b64decode(response.headers["content-md5"]).hex() == digest
    assert response.headers["content-disposition"] == (
        "attachment; filename=\"report.bin\"; filename*=UTF-8''report.bin"
    )
    assert response.headers["x-content-type-options"] == "nosniff"
    assert _md5(response.content) == response.headers["x-content-md5"]
    part = await client.get(uploaded["url"], headers={**user.headers, "Range": "bytes=10-19"})
    assert (part.status_code, part.content) == (206, data[10:20])
    # The bytes sit at a path made of ids only; nothing is left in the staging directory.
    [path] = _stored(settings)
    assert path == settings.resolved_files_dir / user.workspace_id / file_id[-2:] / file_id


async def test_head_of_a_download_gives_its_headers_without_the_bytes(
    client: AsyncClient,
) -> None:
    user = await register(client)
    data = bytes(range(256)) * 256  # 65,536 bytes: one full chunk, so the stream goes on
    url = data_of(await _upload(client, user, "big.bin", data))["url"]
    got = await client.get(url, headers=user.headers)
    head = await client.head(url, headers=user.headers)
    assert (head.status_code, head.content) == (200, b"")
    for name in ("content-length", "etag", "x-content-md5", "content-disposition"):
        assert head.headers[name] == got.headers[name], name
    assert head.headers["content-length"] == str(len(data))
    # The download still works after a HEAD cut its stream short.
    assert (await client.get(url, headers=user.headers)).content == data


async def test_md5_may_be_base64_and_the_upload_needs_none(client: AsyncClient) -> None:
    user = await register(client)
    data = b"hello, files"
    b64 = base64.b64encode(hashlib.md5(data, usedforsecurity=False).digest()).decode()
    assert data_of(await _upload(client, user, "a.txt", data, md5=b64))["md5"] == _md5(data)
    assert data_of(await _upload(client, user, "b.txt", data))["md5"] == _md5(data)
    assert data_of(await _upload(client, user, "c.txt", data, md5=_md5(data).upper()))["size"] == 12


# --- refusals store nothing -------------------------------------------------------------------


async def test_md5_mismatch_is_400_and_stores_nothing(
    app: FastAPI, client: AsyncClient, settings: Settings
) -> None:
    user = await register(client)
    data = b"x" * 5000
    wrong = _md5(b"something else")
    response = await _upload(client, user, "a.bin", data, md5=wrong)
    body = assert_error(response, 400, "md5_mismatch")
    assert (body["expected"], body["actual"]) == (wrong, _md5(data))
    assert await _rows(app) == 0
    assert _stored(settings) == []
    malformed = await _upload(client, user, "a.bin", data, md5="not-an-md5")
    assert assert_error(malformed, 400, "invalid_input")["errors"][0]["field"] == "md5"
    assert await _rows(app) == 0
    assert _stored(settings) == []


async def test_file_over_the_limit_is_413_and_stores_nothing(
    app: FastAPI, client: AsyncClient, settings: Settings
) -> None:
    user = await register(client)
    assert data_of(await _upload(client, user, "max.bin", b"a" * LIMIT))["size"] == LIMIT
    assert len(_stored(settings)) == 1

    response = await _upload(client, user, "big.bin", b"a" * (LIMIT + 1))
    assert assert_error(response, 413, "payload_too_large")["maxFileBytes"] == LIMIT
    # A body declared larger than the route allows is refused before it is read.
    huge = await client.post(
        "/api/v1/files",
        content=b"x" * (2 * LIMIT + 64 * 1024),
        headers={**user.headers, "Content-Type": "multipart/form-data; boundary=xyz"},
    )
    assert_error(huge, 413, "payload_too_large")
    assert await _rows(app) == 1
    assert len(_stored(settings)) == 1
    # Other routes keep the global body limit (1 MiB), uploads have their own.
    assert app.state.settings.max_body_bytes == 1024 * 1024


async def test_missing_file_or_a_form_that_is_not_multipart_is_400(
    app: FastAPI, client: AsyncClient, settings: Settings
) -> None:
    user = await register(client)
    only_md5 = await client.post(
        "/api/v1/files", files={"md5": (None, _md5(b""))}, headers=user.headers
    )
    assert assert_error(only_md5, 400, "invalid_input")["errors"] == [
        {"field": "file", "message": "a file is required"}
    ]
    as_json = await client.post("/api/v1/files", json={"file": "abc"}, headers=user.headers)
    assert_error(as_json, 400, "invalid_multipart")
    wrong_field = await client.post(
        "/api/v1/files", files={"upload": ("a.txt", b"a")}, headers=user.headers
    )
    assert assert_error(wrong_field, 400, "invalid_input")["errors"][0]["field"] == "upload"
    text_as_file = await client.post(
        "/api/v1/files", files={"file": (None, b"abc")}, headers=user.headers
    )
    assert assert_error(text_as_file, 400, "invalid_input")["errors"][0]["field"] == "file"
    two = await client.post(
        "/api/v1/files",
        files=[("file", ("a.txt", b"a")), ("file", ("b.txt", b"b"))],
        headers=user.headers,
    )
    assert_error(two, 400, "too_many_files")
    assert await _rows(app) == 0
    assert _stored(settings) == []


async def test_truncated_body_is_400_and_stores_nothing(
    app: FastAPI, client: AsyncClient, settings: Settings
) -> None:
    user = await register(client)
    body = (
        b"--b0undary\r\n"
        b'Content-Disposition: form-data; name="file"; filename="a.txt"\r\n'
        b"Content-Type: text/plain\r\n\r\n" + b"partial content, no closing boundary"
    )
    response = await client.post(
        "/api/v1/files",
        content=body,
        headers={**user.headers, "Content-Type": "multipart/form-data; boundary=b0undary"},
    )
    assert_error(response, 400, "invalid_multipart")
    assert await _rows(app) == 0
    assert _stored(settings) == []


# --- names ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "kept"),
    [
        ("../../etc/passwd", "passwd"),
        ("..\\..\\windows\\win.ini", "win.ini"),
        ("C:\\Users\\me\\report.pdf", "report.pdf"),
        ("..", "file"),
        ("/", "file"),
        ("合同.pdf", "合同.pdf"),
        ("esc\x1b[31m;red.txt", "esc[31m;red.txt"),
        ("evil\u202egnp.exe", "evilgnp.exe"),
    ],
)
async def test_odd_file_names_are_kept_as_bare_names_only(
    client: AsyncClient, settings: Settings, given: str, kept: str
) -> None:
    user = await register(client)
    uploaded = data_of(await _upload(client, user, given, b"payload"))
    assert uploaded["name"] == kept
    response = await client.get(uploaded["url"], headers=user.headers)
    assert response.content == b"payload"
    disposition = response.headers["content-disposition"]
    assert disposition.startswith('attachment; filename="')
    assert disposition.endswith("filename*=UTF-8''" + quote(kept, safe=""))
    [path] = _stored(settings)
    assert path.parent.parent.parent == settings.resolved_files_dir
    assert path.name == uploaded["id"]


# --- tenants and roles ------------------------------------------------------------------------


async def test_another_workspace_cannot_read_list_or_delete(
    app: FastAPI, client: AsyncClient, settings: Settings
) -> None:
    owner = await register(client)
    stranger = await register(client)
    file_id = data_of(await _upload(client, owner, "secret.txt", b"secret"))["id"]
    url = f"/api/v1/files/{file_id}"
    assert_error(await client.get(url, headers=stranger.headers), 404, "file_not_found")
    assert_error(await client.delete(url, headers=stranger.headers), 404, "file_not_found")
    assert (await _listed(client, stranger.headers))["list"] == []
    # Naming the owner's workspace doesn't help a non-member either.
    foreign = {**stranger.headers, "X-Workspace-Id": owner.workspace_id}
    assert_error(await client.get(url, headers=foreign), 404, "workspace_not_found")
    assert_error(
        await client.get("/api/v1/files/not-an-id", headers=owner.headers), 404, "file_not_found"
    )
    assert (await client.get(url, headers=owner.headers)).content == b"secret"
    assert await _rows(app, owner.workspace_id) == 1
    assert len(_stored(settings)) == 1


async def test_viewer_reads_but_cannot_upload_or_delete(
    app: FastAPI, client: AsyncClient, settings: Settings
) -> None:
    owner, workspace_id, members = await team(client, "viewer", "editor")
    as_owner = {**owner.headers, "X-Workspace-Id": workspace_id}
    as_viewer = {**members["viewer"].headers, "X-Workspace-Id": workspace_id}
    as_editor = {**members["editor"].headers, "X-Workspace-Id": workspace_id}
    refused = await _upload(client, owner, "v.txt", b"v", headers=as_viewer)
    assert assert_error(refused, 403, "insufficient_role")["requiredRole"] == "editor"
    assert await _rows(app, workspace_id) == 0
    assert _stored(settings) == []

    uploaded = data_of(await _upload(client, owner, "e.txt", b"by editor", headers=as_editor))
    assert uploaded["createdBy"] == members["editor"].account_id
    assert (await client.get(uploaded["url"], headers=as_viewer)).content == b"by editor"
    assert [f["id"] for f in (await _listed(client, as_viewer))["list"]] == [uploaded["id"]]
    assert_error(await client.delete(uploaded["url"], headers=as_viewer), 403, "insufficient_role")
    assert data_of(await client.delete(uploaded["url"], headers=as_owner)) == {"id": uploaded["id"]}


# --- several files at once --------------------------------------------------------------------


async def test_multiple_files_are_stored_all_or_none(
    app: FastAPI, client: AsyncClient, settings: Settings
) -> None:
    user = await register(client)
    files = [("one.txt", b"1" * 10, "text/plain"), ("two.bin", b"2" * 20, "application/pdf")]
    files.append(("three.txt", b"3" * 30, "text/plain"))
    md5s = [_md5(data) for _, data, _ in files]

    bad = await _upload_many(client, user, files, [md5s[0], _md5(b"nope"), md5s[2]])
    assert assert_error(bad, 400, "md5_mismatch")["name"] == "two.bin"
    too_big = await _upload_many(client, user, [*files[:2], ("big", b"x" * (LIMIT + 1), "a/b")])
    assert_error(too_big, 413, "payload_too_large")
    too_many = await _upload_many(client, user, [*files, ("four.txt", b"4", "text/plain")])
    assert_error(too_many, 400, "too_many_files")
    miscounted = await _upload_many(client, user, files, md5s[:2])
    assert assert_error(miscounted, 400, "invalid_input")["errors"][0]["field"] == "md5"
    assert_error(await _upload_many(client, user, []), 400, "invalid_multipart")
    assert await _rows(app) == 0
    assert _stored(settings) == []

    stored = data_of(await _upload_many(client, user, files, md5s))
    assert [(f["name"], f["size"], f["md5"], f["contentType"]) for f in stored] == [
        (name, len(data), _md5(data), kind) for name, data, kind in files
    ]
    for item, (_, data, _) in zip(stored, files, strict=True):
        assert (await client.get(item["url"], headers=user.headers)).content == data
    assert await _rows(app) == 3
    assert len(_stored(settings)) == 3


# --- listing and deleting ---------------------------------------------------------------------


async def test_list_pages_newest_first(client: AsyncClient) -> None:
    user = await register(client)
    ids = [data_of(await _upload(client, user, f"f{i}.txt", b"x" * i))["id"] for i in range(3)]
    first = await _listed(client, user.headers, pageSize=2)
    assert (first["totalCount"], first["totalPage"], first["pageNo"], first["pageSize"]) == (
        3,
        2,
        1,
        2,
    )
    second = await _listed(client, user.headers, pageSize=2, pageNo=2)
    assert [f["id"] for f in first["list"] + second["list"]] == ids[::-1]
    by_size = await _listed(client, user.headers, sort="size", order="asc")
    assert [f["size"] for f in by_size["list"]] == [0, 1, 2]
    assert_error(
        await client.get("/api/v1/files?sort=md5", headers=user.headers),
        400,
        "invalid_sort_field",
    )


async def test_delete_removes_the_bytes_and_the_file(
    app: FastAPI, client: AsyncClient, settings: Settings
) -> None:
    user = await register(client)
    keep = data_of(await _upload(client, user, "keep.txt", b"keep"))
    gone = data_of(await _upload(client, user, "gone.txt", b"gone"))
    assert len(_stored(settings)) == 2
    assert data_of(await client.delete(gone["url"], headers=user.headers)) == {"id": gone["id"]}
    assert [p.name for p in _stored(settings)] == [keep["id"]]
    assert_error(await client.get(gone["url"], headers=user.headers), 404, "file_not_found")
    assert_error(await client.delete(gone["url"], headers=user.headers), 404, "file_not_found")
    assert [f["id"] for f in (await _listed(client, user.headers))["list"]] == [keep["id"]]
    assert (await client.get(keep["url"], headers=user.headers)).content == b"keep"


async def test_openapi_documents_the_file_routes(client: AsyncClient) -> None:
    paths = (await client.get("/openapi.json")).json()["paths"]
    single = paths["/api/v1/files"]["post"]["requestBody"]["content"]["multipart/form-data"]
    assert single["schema"]["required"] == ["file"]
    assert set(single["schema"]["properties"]) == {"file", "md5"}
    many = paths["/api/v1/multiple-files"]["post"]["requestBody"]["content"]
    assert many["multipart/form-data"]["schema"]["properties"]["files"]["type"] == "array"
    assert "get" in paths["/api/v1/files"]
    download = paths["/api/v1/files/{file_id}"]
    assert "application/octet-stream" in download["get"]["responses"]["200"]["content"]
    assert "delete" in download


# --- the uploadsPerMonth quota ----------------------------------------------------------------


async def _on_plan(app: FastAPI, client: AsyncClient, workspace_id: str, **quotas: int) -> User:
    admin = await make_admin(app, client)
    await on_plan(client, admin, workspace_id, "uploads", **quotas)
    return admin


async def _uploads_usage(client: AsyncClient, user: User) -> dict[str, Any]:
    plans = data_of(await client.get("/api/v1/user/plans", headers=user.headers))
    [usage] = [u for u in plans["usage"] if u["quota"] == "uploadsPerMonth"]
    # The next UTC month's start (exactly, under a frozen clock: test_review_quota_reset.py).
    assert re.fullmatch(r"\d{4}-\d{2}-01T00:00:00Z", usage.pop("resetTime"))
    return dict(usage)


async def test_uploads_quota_refuses_notes_the_hit_and_deleting_gives_nothing_back(
    app: FastAPI, client: AsyncClient, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The quota-hit log's clock stands still: its rows fold refusals per UTC minute, and a
    # minute ending between the two refusals below would leave two rows of one each.
    noted = utcnow().replace(second=30, microsecond=0)
    monkeypatch.setattr("apiforge.plans.hits.utcnow", lambda: noted)
    user = await register(client)
    admin = await _on_plan(app, client, user.workspace_id, uploadsPerMonth=3)
    first = data_of(await _upload(client, user, "a.txt", b"a"))
    assert data_of(await _upload_many(client, user, [("b", b"b", "text/plain")]))[0]["name"] == "b"
    # Two files where one is left: refused whole, nothing stored.
    over = await _upload_many(client, user, [("c", b"c", "text/plain"), ("d", b"d", "text/plain")])
    refused = assert_error(over, 403, "quota_exceeded")
    assert (refused["quota"], refused["limit"], refused["used"]) == ("uploadsPerMonth", 3, 2)
    assert len(_stored(settings)) == 2
    assert data_of(await _upload(client, user, "c.txt", b"c"))["size"] == 1
    assert len(_stored(settings)) == 3

    # The fourth upload is refused; deleting a file does not give the upload back.
    assert data_of(await client.delete(first["url"], headers=user.headers))["id"] == first["id"]
    response = await _upload(client, user, "d.txt", b"d")
    assert "uploadsPerMonth" in response.json()["message"]
    assert assert_error(response, 403, "quota_exceeded")["used"] == 3
    assert len(_stored(settings)) == 2
    assert (await _listed(client, user.headers))["totalCount"] == 2

    await quota_meter(app.state.engine).hits.flush()
    hits = data_of(
        await client.get(
            "/api/v1/admin/quota-hits",
            params={"workspaceId": user.workspace_id, "quota": "uploadsPerMonth"},
            headers=admin.headers,
        )
    )["list"]
    assert len(hits) == 1  # both refusals of this minute fold into one row
    assert (hits[0]["operation"], hits[0]["limit"], hits[0]["hits"]) == ("files.upload", 3, 2)
    assert await _uploads_usage(client, user) == {
        "quota": "uploadsPerMonth",
        "limit": 3,
        "used": 3,
        "warning": 1,
    }


async def test_user_plans_warns_at_eighty_percent_of_uploads(
    app: FastAPI, client: AsyncClient
) -> None:
    user = await register(client)
    await _on_plan(app, client, user.workspace_id, uploadsPerMonth=5)
    for i in range(3):
        data_of(await _upload(client, user, f"{i}.txt", b"x"))
    assert await _uploads_usage(client, user) == {
        "quota": "uploadsPerMonth",
        "limit": 5,
        "used": 3,
        "warning": 0,
    }
    data_of(await _upload(client, user, "4.txt", b"x"))
    usage = await _uploads_usage(client, user)
    assert (usage["used"], usage["warning"]) == (4, 1)


async def test_concurrent_uploads_never_pass_the_quota(
    app: FastAPI, client: AsyncClient, settings: Settings
) -> None:
    user = await register(client)
    await _on_plan(app, client, user.workspace_id, uploadsPerMonth=3)
    responses = await asyncio.gather(
        *(_upload(client, user, f"{i}.txt", b"y" * 2000) for i in range(8))
    )
    statuses = sorted(r.status_code for r in responses)
    assert statuses == [200] * 3 + [403] * 5, [r.text for r in responses]
    assert await _rows(app, user.workspace_id) == 3
    assert len(_stored(settings)) == 3


async def test_bytes_already_placed_are_removed_when_the_upload_fails_later(
    app: FastAPI, client: AsyncClient, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    user = await register(client)
    place = FileStorage.place
    placed: list[Path] = []

    def place_then_fail(
        self: FileStorage, staged: StagedFile, workspace_id: str, file_id: str
    ) -> Path:
        if placed:
            raise OSError("disk went away")
        placed.append(place(self, staged, workspace_id, file_id))
        return placed[-1]

    monkeypatch.setattr(FileStorage, "place", place_then_fail)
    files = [("a.txt", b"a", "text/plain"), ("b.txt", b"b", "text/plain")]
    response = await _upload_many(client, user, files)
    assert_error(response, 500, "internal_error")
    assert len(placed) == 1
    assert not placed[0].exists()
    assert _stored(settings) == []
    assert await _rows(app) == 0


async def test_workspace_keys_upload_with_their_role_and_are_recorded(
    app: FastAPI, client: AsyncClient
) -> None:
    owner = await register(client)
    editor_key_id, editor_secret = await create_key(client, owner.headers, type="ws", role="editor")
    _, viewer_secret = await create_key(client, owner.headers, type="ws", role="viewer")
    by_viewer = await _upload(client, owner, "v.txt", b"v", headers={"X-Api-Key": viewer_secret})
    assert_error(by_viewer, 403, "insufficient_role")
    uploaded = data_of(
        await _upload(client, owner, "k.txt", b"k", headers={"X-Api-Key": editor_secret})
    )
    assert uploaded["createdBy"] == owner.account_id  # a key acts for its creator
    async with app.state.engine.connect() as connection:
        stmt = select(File.created_by_key).where(File.id == uploaded["id"])
        assert await connection.scalar(stmt) == editor_key_id
    viewer_get = await client.get(uploaded["url"], headers={"X-Api-Key": viewer_secret})
    assert viewer_get.content == b"k"


async def test_a_keyed_upload_runs_once_and_its_retry_replays(
    app: FastAPI, client: AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An upload with an `Idempotency-Key`, bigger than the memory the idempotency middleware
    keeps a body in (it spools the rest to a file): stored once, and the retry — the same bytes,
    multipart boundary included — replays its answer."""
    monkeypatch.setattr(spool, "IN_MEMORY_BYTES", 16 * 1024)
    user = await register(client)
    data = os.urandom(60 * 1024 + 17)
    keyed = {**user.headers, "Idempotency-Key": "upload-once"}
    prepared = client.build_request(
        "POST", "/api/v1/files", files={"file": ("big.bin", data)}, headers=keyed
    )
    body = prepared.read()
    first = await client.post("/api/v1/files", content=body, headers=prepared.headers)
    again = await client.post("/api/v1/files", content=body, headers=prepared.headers)
    assert first.status_code == 200, first.text
    assert again.headers["Idempotent-Replayed"] == "1"
    assert again.content == first.content
    assert await _rows(app, user.workspace_id) == 1
    stored = data_of(first)
    download = await client.get(f"/api/v1/files/{stored['id']}", headers=user.headers)
    assert download.content == data
    other = await _upload(client, user, "big.bin", data, headers=keyed)  # another boundary
    assert_error(other, 422, "idempotency_key_mismatch")
