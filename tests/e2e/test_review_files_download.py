"""A ranged download (206) carries no digest of the whole file as if it were the body's: a
client checking `Content-MD5` / `X-Content-MD5` against what it received never rejects a
correct range; the whole download keeps them, and the `ETag` names the file either way."""

import base64
import hashlib

from httpx import AsyncClient

from tests.e2e._workspaces import data_of
from tests.factories import register

DATA = bytes(range(256)) * 8


async def test_partial_downloads_carry_no_whole_file_digest(client: AsyncClient) -> None:
    user = await register(client)
    uploaded = await client.post(
        "/api/v1/files", files={"file": ("r.bin", DATA)}, headers=user.headers
    )
    file = data_of(uploaded)
    whole = await client.get(file["url"], headers=user.headers)
    assert whole.status_code == 200
    digest = hashlib.md5(whole.content, usedforsecurity=False).hexdigest()
    assert whole.headers["x-content-md5"] == digest
    assert base64.b64decode(whole.headers["content-md5"]).hex() == file["md5"]

    for ranges in ("bytes=10-19", "bytes=0-1,100-101"):
        part = await client.get(file["url"], headers={**user.headers, "Range": ranges})
        assert part.status_code == 206
        assert "content-md5" not in part.headers
        assert "x-content-md5" not in part.headers
        assert part.headers["etag"] == f'"{file["md5"]}"'
        assert part.headers["content-disposition"].startswith("attachment;")
        assert part.headers["x-content-type-options"] == "nosniff"
    part = await client.get(file["url"], headers={**user.headers, "Range": "bytes=10-19"})
    assert part.content == DATA[10:20]
    # If-Range with the ETag still resumes a download.
    resumed = await client.get(
        file["url"],
        headers={**user.headers, "Range": "bytes=2000-", "If-Range": f'"{file["md5"]}"'},
    )
    assert (resumed.status_code, resumed.content) == (206, DATA[2000:])
