"""Removing deleted workspaces' bytes: theirs only, and nothing to do is no error."""

from pathlib import Path

from apiforge.files.storage import DELETED, FileStorage
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
