"""Removing deleted workspaces' bytes: theirs only, and nothing to do is no error; sweeping
what killed processes left behind, but no upload another process may still be receiving."""

import os
import time
from pathlib import Path

from structlog.testing import capture_logs

from apiforge.files.storage import DELETED, INCOMING, STALE_PART_SECONDS, FileStorage
from apiforge.tools.ids import new_id


def _put(storage: FileStorage, workspace_id: str) -> Path:
    path = storage.path_of(workspace_id, new_id())
    path.parent.mkdir(parents=True)
    path.write_bytes(b"x")
    return path


def test_removing_workspaces_takes_their_bytes_only(tmp_path: Path) -> None:
    storage = FileStorage(tmp_path / "files")
    gone, kept = new_id(), new_id()
    _put(storage, gone)
    _put(storage, gone)
    still = _put(storage, kept)
    # Without an event loop (a command-line tool) the removal runs at once.
    storage.remove_workspaces([gone, new_id(), "../files", ""])
    assert not (storage.root / gone).exists()
    assert [p for p in storage.root.rglob("*") if p.is_file()] == [still]
    assert list((storage.root / DELETED).iterdir()) == []


def test_removing_workspaces_without_bytes_does_nothing(tmp_path: Path) -> None:
    storage = FileStorage(tmp_path / "files")
    storage.remove_workspaces([new_id()])  # not even the root exists
    assert not storage.root.exists()


def _leftovers(storage: FileStorage) -> tuple[Path, Path, Path, Path]:
    """A dead upload, one still streaming in, a deleted workspace's bytes half removed, a file."""
    incoming = storage.root / INCOMING
    incoming.mkdir(parents=True)
    dead, live = incoming / "dead.part", incoming / "live.part"
    dead.write_bytes(b"cut short")
    live.write_bytes(b"arriving")
    old = time.time() - STALE_PART_SECONDS - 60
    os.utime(dead, (old, old))
    half = storage.root / DELETED / "a1b2" / "zz"
    half.mkdir(parents=True)
    (half / new_id()).write_bytes(b"x")
    kept = _put(storage, new_id())
    return dead, live, half.parent, kept


def test_sweeping_removes_dead_uploads_and_half_removed_workspaces(tmp_path: Path) -> None:
    storage = FileStorage(tmp_path / "files")
    dead, live, half_removed, kept = _leftovers(storage)
    with capture_logs() as logs:
        storage.sweep()
    assert not dead.exists()
    assert live.exists()  # written to lately: maybe another process's upload in progress
    assert not half_removed.exists()
    assert kept.read_bytes() == b"x"
    assert [e for e in logs if e["event"] == "files_swept"] == [
        {"event": "files_swept", "parts": 1, "deleted_trees": 1, "log_level": "warning"}
    ]


def test_sweeping_nothing_creates_nothing_and_logs_nothing(tmp_path: Path) -> None:
    storage = FileStorage(tmp_path / "files")
    with capture_logs() as logs:
        storage.sweep()
    assert not storage.root.exists()
    assert logs == []
