"""A download racing a deletion of the same file answers as if it came wholly before the
deletion (the bytes, whole) or wholly after it (404 `file_not_found`): never a 500 because the
bytes vanished between finding the file and sending it, nor a 503 `file_content_unavailable`
(meant for a node that cannot see the files directory) for a file that was simply deleted."""

from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from httpx import AsyncClient

from apiforge.core.settings import Settings
from apiforge.files.service import FileService
from apiforge.files.storage import FileStorage
from tests.e2e._workspaces import assert_error, data_of
from tests.factories import User, register

DATA = bytes(range(256)) * 300  # several chunks of a streamed answer


def _delete_once_after(
    monkeypatch: pytest.MonkeyPatch,
    method: str,
    delete: Callable[[], Awaitable[None]],
) -> list[bool]:
    """Patch `FileService.<method>` so that the first call, once done, lets a deletion of the
    file commit (through the API) before the download goes on."""
    original = getattr(FileService, method)
    done: list[bool] = []

    async def then_delete(self: FileService, *args: Any, **kwargs: Any) -> Any:
        result = await original(self, *args, **kwargs)
        if not done:
            done.append(True)
            await delete()
        return result

    monkeypatch.setattr(FileService, method, then_delete)
    return done


async def _uploaded(
    client: AsyncClient,
) -> tuple[User, dict[str, Any], Callable[[], Awaitable[None]]]:
    """A user's uploaded file and a deletion of it through the API."""
    user = await register(client)
    file = data_of(
        await client.post("/api/v1/files", files={"file": ("a.bin", DATA)}, headers=user.headers)
    )

    async def delete() -> None:
        data_of(await client.delete(file["url"], headers=user.headers))

    return user, file, delete


@pytest.mark.parametrize("method", ["HEAD", "GET"])
async def test_a_file_deleted_once_found_is_still_sent_whole(
    client: AsyncClient, monkeypatch: pytest.MonkeyPatch, method: str
) -> None:
    user = await register(client)
    other = await register(client)  # the one deleting: a second member would do the same
    file = data_of(
        await client.post("/api/v1/files", files={"file": ("a.bin", DATA)}, headers=user.headers)
    )

    async def delete() -> None:
        deleted = await client.delete(file["url"], headers=user.headers)
        assert data_of(deleted) == {"id": file["id"]}

    done = _delete_once_after(monkeypatch, "download", delete)
    response = await client.request(method, file["url"], headers=user.headers)
    assert done == [True]
    assert response.status_code == 200, response.text
    assert response.headers["content-length"] == str(len(DATA))
    assert response.content == (DATA if method == "GET" else b"")
    # The deletion did happen: the file is gone for everyone afterwards.
    assert_error(await client.get(file["url"], headers=user.headers), 404, "file_not_found")
    assert_error(await client.get(file["url"], headers=other.headers), 404, "file_not_found")


async def test_a_range_of_a_file_deleted_once_found_is_still_sent(
    client: AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    user, file, delete = await _uploaded(client)
    _delete_once_after(monkeypatch, "download", delete)
    response = await client.get(file["url"], headers={**user.headers, "Range": "bytes=100-199"})
    assert (response.status_code, response.content) == (206, DATA[100:200])


async def test_a_file_deleted_before_its_bytes_are_opened_is_404(
    client: AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    user, file, delete = await _uploaded(client)
    # The row is read, then the deletion commits and takes the bytes: a 404, as a moment later.
    done = _delete_once_after(monkeypatch, "_file", delete)
    response = await client.get(file["url"], headers=user.headers)
    assert done == [True]
    assert_error(response, 404, "file_not_found")


async def test_a_live_file_whose_bytes_this_server_cannot_see_is_503(
    client: AsyncClient, settings: Settings
) -> None:
    user = await register(client)
    file = data_of(
        await client.post("/api/v1/files", files={"file": ("a.bin", DATA)}, headers=user.headers)
    )
    FileStorage(settings.resolved_files_dir).path_of(user.workspace_id, file["id"]).unlink()
    response = await client.get(file["url"], headers=user.headers)
    assert_error(response, 503, "file_content_unavailable")
    assert len(data_of(await client.get("/api/v1/files", headers=user.headers))["list"]) == 1
