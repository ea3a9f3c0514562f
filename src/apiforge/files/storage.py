"""The bytes of uploaded files on local disk, at paths made from generated ids alone.

Layout under the root (`APIFORGE_FILES_DIR`, default `<data dir>/files`):

- `<workspace id>/<last two characters of the file id>/<file id>` — one file's bytes. Ids begin
  with their creation time, so their last (random) characters spread a workspace's files evenly
  over 1,024 directories; all of a workspace's bytes sit under one directory.
- `.incoming/<random>.part` — uploads still streaming in. They sit on the same file system as
  their final place, so placing one is an atomic rename: a reader never sees half a file.
- `.deleted/<random>/` — the bytes of a deleted workspace, moved aside while they are removed.

What a process killed midway leaves in the last two is swept when a server starts (`sweep`).

Client file names never reach a path; an id that is not a well-formed id never does either.
"""

import asyncio
import hashlib
import os
import secrets
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, BinaryIO

import structlog

from apiforge.tools.ids import is_id

log = structlog.get_logger(__name__)
INCOMING = ".incoming"
DELETED = ".deleted"
# A `.part` file nothing has written to for this long is a dead upload's: a live one is written to
# as its bytes arrive, and another process of a cluster may be receiving one right now.
STALE_PART_SECONDS = 24 * 3600


@dataclass(slots=True)
class StagedFile:
    """One upload streaming into `.incoming/`: its form field, client-given name and type, and
    its size and md5 so far."""

    path: Path
    form_field: str
    name: str
    content_type: str
    size: int = 0
    md5: "hashlib._Hash" = field(default_factory=lambda: hashlib.md5(usedforsecurity=False))
    handle: IO[bytes] | None = None

    def write(self, data: bytes) -> None:
        """Append `data` (blocking: call it off the event loop)."""
        if self.handle is None:
            raise RuntimeError("staged file is closed")
        self.handle.write(data)
        self.md5.update(data)
        self.size += len(data)

    def close(self) -> None:
        if self.handle is not None:
            self.handle.close()
            self.handle = None

    def discard(self) -> None:
        """Close and delete the partial file (a no-op once it was placed)."""
        self.close()
        self.path.unlink(missing_ok=True)

    @property
    def hexdigest(self) -> str:
        return self.md5.hexdigest()


class FileStorage:
    """Files on the local disk (or a directory every server process mounts, in a cluster)."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def path_of(self, workspace_id: str, file_id: str) -> Path:
        if not (is_id(workspace_id) and is_id(file_id)):  # paths are made of generated ids only
            raise ValueError("not an id")
        return self.root / workspace_id / file_id[-2:] / file_id

    def open(self, path: Path) -> BinaryIO:
        """A file's bytes for reading (blocking: call it off the event loop). Once open they stay
        readable to the end, also if a deletion unlinks the path meanwhile."""
        return path.open("rb")

    def stage(self, *, field: str, name: str, content_type: str) -> StagedFile:
        """A new empty file in `.incoming/`, open for writing, readable only by this user."""
        incoming = self.root / INCOMING
        incoming.mkdir(parents=True, exist_ok=True)
        path = incoming / f"{secrets.token_hex(16)}.part"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        staged = StagedFile(path=path, form_field=field, name=name, content_type=content_type)
        staged.handle = os.fdopen(fd, "wb")
        return staged

    def place(self, staged: StagedFile, workspace_id: str, file_id: str) -> Path:
        """Move a complete staged file to its final place (an atomic rename)."""
        staged.close()
        final = self.path_of(workspace_id, file_id)
        final.parent.mkdir(parents=True, exist_ok=True)
        os.replace(staged.path, final)
        return final

    def remove(self, workspace_id: str, file_id: str) -> None:
        """Delete a file's bytes if present. Runs after a commit or rollback, where raising would
        misreport the request: a failure is logged and leaves an orphan, never an error."""
        try:
            self.path_of(workspace_id, file_id).unlink(missing_ok=True)
        except OSError as exc:
            log.error("file_remove_failed", workspace=workspace_id, file=file_id, error=repr(exc))

    def remove_workspaces(self, workspace_ids: Sequence[str]) -> None:
        """Delete all bytes of deleted workspaces (a deletion is final: nothing can bring them
        back). Runs after the deletion commits, never before: a rolled-back one keeps them. Each
        directory is moved aside into `.deleted/` at once (one rename) and emptied off the event
        loop, as a workspace may hold thousands of files, on a network file system in a cluster.
        A workspace without files has nothing to remove; a failure is logged and leaves an
        orphan, never an error."""
        moved: list[Path] = []
        for workspace_id in (i for i in workspace_ids if is_id(i)):
            source = self.root / workspace_id
            target = self.root / DELETED / secrets.token_hex(16)
            try:
                if not source.is_dir():
                    continue
                target.parent.mkdir(exist_ok=True)
                os.rename(source, target)
            except OSError as exc:
                log.error("workspace_files_remove_failed", workspace=workspace_id, error=repr(exc))
                continue
            moved.append(target)
        if not moved:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no event loop to keep free (a command-line tool)
            _remove_trees(moved)
        else:
            loop.run_in_executor(None, _remove_trees, moved)

    def sweep(self, *, stale_after: float = STALE_PART_SECONDS) -> None:
        """Delete what processes killed midway left behind (blocking: call it off the event loop):
        `.incoming/*.part` files not written to for `stale_after` seconds (a younger one may be an
        upload another process is receiving), and every tree under `.deleted/` (a deleted
        workspace's bytes: garbage whoever moved them there; a process still removing one only
        finds less to do). Logged; a failure leaves the file, never an error."""
        horizon = time.time() - stale_after
        parts = 0
        for part in _listed(self.root / INCOMING, "*.part"):
            try:
                if part.stat().st_mtime < horizon:
                    part.unlink()
                    parts += 1
            except FileNotFoundError:  # placed or discarded meanwhile
                continue
            except OSError as exc:
                log.error("files_sweep_failed", path=str(part), error=repr(exc))
        deleted = _listed(self.root / DELETED, "*")
        _remove_trees(deleted)
        trees = sum(1 for path in deleted if not path.exists())
        if parts or trees:
            log.warning("files_swept", parts=parts, deleted_trees=trees)


def _listed(directory: Path, pattern: str) -> list[Path]:
    """The entries of `directory` matching `pattern`; none when it does not exist (yet)."""
    try:
        return list(directory.glob(pattern)) if directory.is_dir() else []
    except OSError as exc:
        log.error("files_sweep_failed", path=str(directory), error=repr(exc))
        return []


def _remove_trees(paths: list[Path]) -> None:
    for path in paths:
        shutil.rmtree(path, ignore_errors=True)
        if path.exists():
            log.error("workspace_files_remove_failed", path=str(path))
