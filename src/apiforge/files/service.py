"""Uploading, listing, downloading and deleting the current workspace's files.

Role rules: any member reads and downloads; editors and above upload and delete. Another
workspace's file is the same 404 as an unknown id.

An upload is checked against the plan's `uploadsPerMonth` quota twice. Once before any byte is
read, without a lock, so a workspace at its limit is refused without sending its file. Then,
after the body has arrived, exactly: under the workspace lock (`plans.service.lock_workspace`,
a row lock on PostgreSQL, the write lock on SQLite) this month's uploads are counted from the
`files` table, checked with the new ones added, and the new rows inserted, all in the request's
transaction. Concurrent uploads of one workspace thus queue for a few milliseconds at that
point and can never together pass the limit, on any number of server processes. This is the
approach of the other counted quotas (members, apps), not the in-process meter's reservations:
the meter trades a bounded overshoot across processes for no database round trip per gateway
call, a trade an upload — which writes a row and a file anyway — does not need. Deleting a file
keeps its row as a tombstone until the month is over, so uploads are never given back.

The body is streamed to disk with no database transaction open (`core.db.end_reads`): a slow
upload holds no pooled connection. Bytes are moved into place just before the commit, and
removed again if the transaction rolls back.
"""

import binascii
from base64 import b64decode
from collections.abc import AsyncIterator
from dataclasses import dataclass
from functools import partial
from typing import Any, BinaryIO

import anyio.to_thread
import structlog
from sqlalchemy import Delete, Update, and_, delete, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.elements import ColumnElement

from apiforge.core.db import after_commit, after_rollback, end_reads
from apiforge.core.errors import ApiforgeError, NotFoundError, UnavailableError, ValidationError
from apiforge.files.models import File
from apiforge.files.receiving import FormSpec, ReceivedForm, receive_form
from apiforge.files.schemas import FileRead
from apiforge.files.storage import FileStorage, StagedFile
from apiforge.files.usage import uploads_this_month
from apiforge.http.pagination import Page, PageParams, fetch_page, order_by
from apiforge.idempotency.locking import NO_PRECONDITION, Precondition
from apiforge.plans.service import check_quota, lock_workspace, plan_of
from apiforge.tools.clock import utcnow
from apiforge.tools.ids import is_id, new_id
from apiforge.usage.counters import month_start
from apiforge.workspaces.models import Role, Workspace
from apiforge.workspaces.service import CurrentWorkspace, WorkspaceNotFoundError

log = structlog.get_logger(__name__)

QUOTA = "uploadsPerMonth"
OPERATION = "files.upload"
MD5_FIELD = "md5"
FILE_SORTS: dict[str, ColumnElement[Any]] = {
    "createdTime": File.created_at.expression,
    "name": File.name.expression,
    "size": File.size.expression,
}


class NoSuchFileError(NotFoundError):
    reason = "file_not_found"
    message = "File not found"


class Md5MismatchError(ApiforgeError):
    status = 400
    reason = "md5_mismatch"
    message = "The file's md5 does not match the bytes received"


@dataclass(frozen=True, slots=True)
class UploadLimits:
    max_file_bytes: int
    max_files: int


@dataclass(frozen=True, slots=True)
class Download:
    """A file's bytes, already open, and how to describe them. Open, because a deletion that
    commits meanwhile unlinks their path: the answer must not need the path again."""

    handle: BinaryIO
    name: str
    content_type: str
    size: int
    md5: str


def file_url(file_id: str) -> str:
    return f"/api/v1/files/{file_id}"


def _read(row: File) -> FileRead:
    return FileRead(
        id=row.id,
        url=file_url(row.id),
        name=row.name,
        size=row.size,
        md5=row.md5,
        content_type=row.content_type,
        created_by=row.created_by,
        created_time=row.created_at,
    )


def _md5_hex(value: str) -> str | None:
    """An md5 as 32 hex digits (any case) or base64 (RFC 1864 `Content-MD5`); None if neither."""
    value = value.strip()
    if len(value) == 32:
        try:
            return bytes.fromhex(value).hex()
        except ValueError:
            return None
    if len(value) == 24:
        try:
            digest = b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            return None
        return digest.hex() if len(digest) == 16 else None
    return None


def _expected_md5s(form: ReceivedForm) -> list[str | None]:
    """The client's md5 of each file, in order (None where it sent none)."""
    given = form.texts.get(MD5_FIELD, [])
    if not given:
        return [None] * len(form.files)
    if len(given) != len(form.files):
        raise ValidationError(
            errors=[{"field": MD5_FIELD, "message": "give one md5 per file, in the same order"}]
        )
    digests = [_md5_hex(value) for value in given]
    if None in digests:
        raise ValidationError(
            errors=[{"field": MD5_FIELD, "message": "must be 32 hex digits or base64 of 16 bytes"}]
        )
    return list(digests)


def _verify(files: list[StagedFile], expected: list[str | None]) -> None:
    for staged, want in zip(files, expected, strict=True):
        if want is not None and want != staged.hexdigest:
            raise Md5MismatchError(
                details={"name": staged.name, "expected": want, "actual": staged.hexdigest}
            )


class FileService:
    """Files of the current workspace. Never commits."""

    def __init__(self, session: AsyncSession, storage: FileStorage, limits: UploadLimits) -> None:
        self.session = session
        self.storage = storage
        self.limits = limits

    async def upload(
        self,
        current: CurrentWorkspace,
        content_type: str,
        body: AsyncIterator[bytes],
        *,
        field: str,
        many: bool,
        key_id: str | None = None,
    ) -> list[FileRead]:
        """Store the files of a multipart `body` sent in form field `field` (one, or up to the
        limit with `many`), each with an optional `md5` field in the same order; all or none.

        400 `invalid_input` (no file, an unknown field, a malformed md5), `invalid_multipart`,
        `too_many_files`, `md5_mismatch`; 403 `insufficient_role` or `quota_exceeded`; 413 for a
        file over the size limit. Whatever fails, nothing is stored."""
        current.require(Role.EDITOR)
        workspace_id = current.id
        await self._within_quota(current.workspace, adding=1)  # before reading a byte
        await end_reads(self.session)
        spec = FormSpec(
            file_fields=frozenset({field}),
            text_fields=frozenset({MD5_FIELD}),
            max_file_bytes=self.limits.max_file_bytes,
            max_files=self.limits.max_files if many else 1,
        )
        async with receive_form(content_type, body, self.storage, spec) as form:
            if not form.files:
                raise ValidationError(errors=[{"field": field, "message": "a file is required"}])
            _verify(form.files, _expected_md5s(form))
            rows = await self._store(workspace_id, current.account_id, key_id, form.files)
        return [_read(row) for row in rows]

    async def list_files(self, current: CurrentWorkspace, params: PageParams) -> Page[FileRead]:
        stmt = select(File).where(File.workspace_id == current.id, File.deleted_at.is_(None))
        stmt = order_by(
            stmt, params, FILE_SORTS, default="createdTime", tiebreak=File.id.expression
        )
        rows, total = await fetch_page(self.session, stmt, params)
        return params.page([_read(row) for row in rows], total)

    async def download(self, current: CurrentWorkspace, file_id: str) -> Download:
        """The file's bytes on disk, opened (the caller closes them); 503
        `file_content_unavailable` if this server can't see them (in a cluster:
        `APIFORGE_FILES_DIR` is not a directory every node shares)."""
        row = await self._file(current.id, file_id)
        path = self.storage.path_of(row.workspace_id, row.id)
        try:
            handle = await anyio.to_thread.run_sync(self.storage.open, path)
        except OSError as exc:
            # A deletion that committed since the row was read has taken the bytes: the 404
            # of a moment later. Ask again in a new transaction (SQLite's snapshot is old).
            await end_reads(self.session)
            await self._file(current.id, file_id)
            log.error("file_content_missing", file=row.id, path=str(path), error=repr(exc))
            raise UnavailableError(
                "The file's content is not available on this server",
                reason="file_content_unavailable",
            ) from exc
        return Download(handle, row.name, row.content_type, row.size, row.md5)

    async def delete(
        self, current: CurrentWorkspace, file_id: str, precondition: Precondition = NO_PRECONDITION
    ) -> None:
        """Delete a file's bytes (once the deletion commits) and its row. A file uploaded this
        month keeps a tombstone row until the month is over: it still counts as an upload.
        `If-Match` must name the download's ETag (`"<md5>"`, 412); the bytes never change, so
        nothing can come between the check and the delete."""
        current.require(Role.EDITOR)
        row = await self._file(current.id, file_id)
        precondition.check_tag(row.md5)
        now = utcnow()
        this_month = month_start(now)
        # Conditional on the file still being live: of concurrent deletions exactly one wins,
        # the others see the 404 they would have seen a moment later.
        live = and_(File.id == row.id, File.deleted_at.is_(None))
        gone: Update | Delete
        if row.created_at >= this_month:
            gone = update(File).where(live).values(deleted_at=now)
        else:
            gone = delete(File).where(live)
        result = await self.session.execute(gone.execution_options(synchronize_session=False))
        if result.rowcount != 1:  # type: ignore[attr-defined]
            raise NoSuchFileError()
        # Tombstones of earlier months count for nothing any more: they go now.
        await self.session.execute(
            delete(File)
            .where(
                File.workspace_id == current.id,
                File.created_at < this_month,
                File.deleted_at.is_not(None),
            )
            .execution_options(synchronize_session=False)
        )
        await self.session.flush()
        after_commit(self.session, partial(self.storage.remove, row.workspace_id, row.id))

    async def _within_quota(self, workspace: Workspace, *, adding: int) -> None:
        plan = await plan_of(self.session, workspace)
        now = utcnow()
        used = await uploads_this_month(self.session, workspace.id, now)
        await check_quota(
            self.session,
            workspace.id,
            plan,
            QUOTA,
            used,
            operation=OPERATION,
            adding=adding,
            counted=now,
        )

    async def _store(
        self, workspace_id: str, account_id: str, key_id: str | None, files: list[StagedFile]
    ) -> list[File]:
        """Under the workspace lock: the exact quota check, the rows, then the bytes in place."""
        await lock_workspace(self.session, workspace_id)
        workspace = await self.session.get(Workspace, workspace_id)
        if workspace is None:  # deleted while the upload streamed in
            raise WorkspaceNotFoundError()
        await self._within_quota(workspace, adding=len(files))
        now = utcnow()
        rows = [
            File(
                id=new_id(),
                workspace_id=workspace_id,
                name=staged.name,
                content_type=staged.content_type,
                size=staged.size,
                md5=staged.hexdigest,
                created_by=account_id,
                created_by_key=key_id,
                created_at=now,
            )
            for staged in files
        ]
        self.session.add_all(rows)
        await self.session.flush()  # first: a failed insert leaves no bytes to take back
        for row, staged in zip(rows, files, strict=True):
            after_rollback(self.session, partial(self.storage.remove, workspace_id, row.id))
            self.storage.place(staged, workspace_id, row.id)
        return rows

    async def _file(self, workspace_id: str, file_id: str) -> File:
        """The live file if it belongs to the workspace; else the one 404 for every case."""
        if not is_id(file_id):
            raise NoSuchFileError()
        row = await self.session.scalar(
            select(File).where(
                File.id == file_id, File.workspace_id == workspace_id, File.deleted_at.is_(None)
            )
        )
        if row is None:
            raise NoSuchFileError()
        return row
