"""A file part's `Content-Type` with a line break, another control character or a character
outside Latin-1 around its `;` is not kept: it would be sent back as a header value, where it
either splits the header or cannot be encoded (every download a 500). It is stored as
`application/octet-stream`, like any other malformed type, and the file downloads."""

import pytest
from fastapi import FastAPI
from httpx import AsyncClient
from sqlalchemy import update

from apiforge.files.models import File
from tests.e2e._workspaces import data_of
from tests.factories import register


@pytest.mark.parametrize(
    "declared",
    [
        b"text/html\n; X-Injected: 1",
        b"text/plain\x0c;x=1",
        "text/plain\u3000;x=1".encode(),
        "text/plain;\u2028x=1".encode(),
    ],
)
async def test_a_part_type_with_controls_is_not_kept_and_the_file_downloads(
    client: AsyncClient, declared: bytes
) -> None:
    user = await register(client)
    body = (
        b"--b0undary\r\n"
        b'Content-Disposition: form-data; name="file"; filename="a.txt"\r\n'
        b"Content-Type: " + declared + b"\r\n\r\n"
        b"payload\r\n--b0undary--\r\n"
    )
    uploaded = await client.post(
        "/api/v1/files",
        content=body,
        headers={**user.headers, "Content-Type": "multipart/form-data; boundary=b0undary"},
    )
    file = data_of(uploaded)
    assert file["contentType"] == "application/octet-stream"
    response = await client.get(file["url"], headers=user.headers)
    assert (response.status_code, response.content) == (200, b"payload")
    assert response.headers["content-type"] == "application/octet-stream"
    assert "x-injected" not in response.headers


async def test_a_file_stored_with_such_a_type_before_downloads_as_octet_stream(
    app: FastAPI, client: AsyncClient
) -> None:
    user = await register(client)
    uploaded = await client.post(
        "/api/v1/files", files={"file": ("a.txt", b"payload", "text/plain")}, headers=user.headers
    )
    file = data_of(uploaded)
    async with app.state.engine.begin() as connection:
        await connection.execute(
            update(File).where(File.id == file["id"]).values(content_type="text/plain\u3000;x=1")
        )
    response = await client.get(file["url"], headers=user.headers)
    assert (response.status_code, response.content) == (200, b"payload")
    assert response.headers["content-type"] == "application/octet-stream"
