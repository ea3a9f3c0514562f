"""`/api/v1/files` and `/api/v1/multiple-files`: upload, list, download and delete files.

Uploads are `multipart/form-data` read as a stream by the service (`files/receiving.py`), so the
routes take the raw request body instead of FastAPI's `UploadFile`; their OpenAPI request bodies
are written out here. Downloads are the file's bytes, outside the envelope (DESIGN.md §2).
"""

import base64
import os
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request, Response

from apiforge.accounts.deps import workspace_key
from apiforge.core.settings import Settings
from apiforge.files.naming import clean_content_type
from apiforge.files.receiving import FORM_OVERHEAD
from apiforge.files.schemas import FileRead
from apiforge.files.sending import send_file
from apiforge.files.service import Download, FileService, UploadLimits
from apiforge.files.storage import FileStorage
from apiforge.http.deps import SessionDep, SettingsDep
from apiforge.http.envelope import Envelope, ok
from apiforge.http.pagination import Page, PageDep
from apiforge.http.schemas import Created
from apiforge.idempotency.locking import IfMatch
from apiforge.tools.disposition import content_disposition
from apiforge.workspaces.deps import CurrentWorkspaceDep, WorkspaceEditor

router = APIRouter(prefix="/api/v1", tags=["files"])

_MD5 = {
    "type": "string",
    "description": "md5 of the file: 32 hex digits or base64 (RFC 1864); checked on arrival",
}


def _form(field: str, many: bool) -> dict[str, Any]:
    file: dict[str, Any] = {"type": "string", "format": "binary"}
    md5: dict[str, Any] = _MD5
    if many:
        file = {"type": "array", "items": file}
        md5 = {"type": "array", "items": _MD5, "description": "one per file, in the same order"}
    return {
        "requestBody": {
            "required": True,
            "content": {
                "multipart/form-data": {
                    "schema": {
                        "type": "object",
                        "required": [field],
                        "properties": {field: file, "md5": md5},
                    },
                    "encoding": {field: {"contentType": "application/octet-stream"}},
                }
            },
        }
    }


_UPLOAD_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"description": "No file, a malformed form or md5 (`md5_mismatch` when it differs)"},
    403: {"description": "Below editor (`insufficient_role`), or `quota_exceeded` (uploads)"},
    413: {"description": "A file over `APIFORGE_MAX_UPLOAD_BYTES` (`payload_too_large`)"},
}
_DOWNLOAD: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "The file's bytes (not the envelope), with `ETag` and `Content-MD5`",
        "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
    },
    206: {"description": "The byte ranges of a valid `Range` (one, or `multipart/byteranges`)"},
    304: {"description": "`If-None-Match` names the file's `ETag`: no body"},
    404: {"description": "Unknown file, or another workspace's (`file_not_found`)"},
    416: {"description": "No range of the `Range` lies within the file (`range_not_satisfiable`)"},
}


def upload_body_limits(settings: Settings) -> dict[str, int]:
    """Body limits of the upload routes (`BodyLimitMiddleware`), in place of the global one:
    their files, each up to `APIFORGE_MAX_UPLOAD_BYTES`, plus room for the form around them.
    The size of each file is enforced exactly while it streams in (`files/receiving.py`)."""
    per_file = settings.max_upload_bytes + FORM_OVERHEAD
    return {
        "/api/v1/files": per_file,
        "/api/v1/multiple-files": per_file * settings.max_upload_files,
    }


def _files(session: SessionDep, settings: SettingsDep) -> FileService:
    storage = FileStorage(settings.resolved_files_dir)
    limits = UploadLimits(settings.max_upload_bytes, settings.max_upload_files)
    return FileService(session, storage, limits)


def _key_id(request: Request) -> str | None:
    key = workspace_key(request)
    return None if key is None else key.id


FileServiceDep = Annotated[FileService, Depends(_files)]
KeyIdDep = Annotated[str | None, Depends(_key_id)]


def _download_response(download: Download, request: Request) -> Response:
    """The file's bytes, read from the handle the service opened (`Download`), never from the
    path again: a deletion committing meanwhile unlinks the path, not the open file, so the
    answer is whole or, before the opening, a 404.

    The digest headers describe the whole file, so an answer whose body is only part of it
    (206, a `Range` request) leaves them out: `Content-MD5` is the digest of the body (RFC 1864),
    and a client checking it against what it received would reject a correct range. The `ETag`
    still names the whole file, as `If-Range` needs."""
    stat = os.fstat(download.handle.fileno())
    return send_file(
        download.handle,
        size=stat.st_size,
        mtime=stat.st_mtime,
        etag=f'"{download.md5}"',
        # Checked again: a type stored before the check was strict may not be sendable.
        media_type=clean_content_type(download.content_type),
        request=request.headers,
        headers={
            "Content-Disposition": content_disposition(download.name),
            "X-Content-Type-Options": "nosniff",
            "Content-Security-Policy": "sandbox; default-src 'none'",
            "Cache-Control": "private",
        },
        whole_only={
            "Content-MD5": base64.b64encode(bytes.fromhex(download.md5)).decode("ascii"),
            "X-Content-MD5": download.md5,
        },
    )


@router.post(
    "/files",
    summary="Upload one file: form field `file`, optional `md5` (editor+)",
    openapi_extra=_form("file", many=False),
    responses=_UPLOAD_ERRORS,
)
async def upload_file(
    request: Request, current: WorkspaceEditor, service: FileServiceDep, key_id: KeyIdDep
) -> Envelope[FileRead]:
    content_type = request.headers.get("content-type", "")
    files = await service.upload(
        current, content_type, request.stream(), field="file", many=False, key_id=key_id
    )
    return ok(files[0])


@router.post(
    "/multiple-files",
    summary="Upload several files: form fields `files`, optional `md5` per file; all or none",
    openapi_extra=_form("files", many=True),
    responses=_UPLOAD_ERRORS,
)
async def upload_files(
    request: Request, current: WorkspaceEditor, service: FileServiceDep, key_id: KeyIdDep
) -> Envelope[list[FileRead]]:
    content_type = request.headers.get("content-type", "")
    files = await service.upload(
        current, content_type, request.stream(), field="files", many=True, key_id=key_id
    )
    return ok(files)


@router.get("/files", summary="Files of the current workspace, newest first")
async def list_files(
    current: CurrentWorkspaceDep, service: FileServiceDep, page: PageDep
) -> Envelope[Page[FileRead]]:
    return ok(await service.list_files(current, page))


@router.get(
    "/files/{file_id}",
    summary="Download a file's bytes",
    response_class=Response,
    responses=_DOWNLOAD,
)
async def download_file(
    file_id: str, request: Request, current: CurrentWorkspaceDep, service: FileServiceDep
) -> Response:
    return _download_response(await service.download(current, file_id), request)


@router.delete("/files/{file_id}", summary="Delete a file and its bytes (editor+)")
async def delete_file(
    file_id: str, current: CurrentWorkspaceDep, service: FileServiceDep, if_match: IfMatch
) -> Envelope[Created]:
    await service.delete(current, file_id, if_match)
    return ok(Created(id=file_id))
