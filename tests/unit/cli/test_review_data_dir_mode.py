"""The data dir is created owner-only: it holds the database, `secret.key` and uploads."""

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from apiforge.core.settings import Settings
from apiforge.migrate import upgrade


@pytest.fixture(autouse=True)
def loose_umask() -> Iterator[None]:
    """A umask that leaves new directories readable by all: the data dir must not rely on it."""
    previous = os.umask(0o022)
    yield
    os.umask(previous)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_db_upgrade_creates_a_private_data_dir(tmp_path: Path) -> None:
    data_dir = tmp_path / "new" / ".apiforge"
    upgrade(Settings(data_dir=data_dir, database_url=""))
    assert (data_dir / "apiforge.db").exists()
    assert _mode(data_dir) == 0o700


def test_the_secret_key_creates_a_private_data_dir(tmp_path: Path) -> None:
    """On PostgreSQL nothing else creates the data dir before the key is written into it."""
    data_dir = tmp_path / "keys-only"
    key = Settings(data_dir=data_dir, secret_key=None).signing_key
    assert (data_dir / "secret.key").read_text() == key
    assert _mode(data_dir) == 0o700


def test_an_existing_data_dir_keeps_its_mode(tmp_path: Path) -> None:
    """A directory the operator made (shared with a group, say) is theirs to set."""
    data_dir = tmp_path / "shared"
    data_dir.mkdir(mode=0o750)
    Settings(data_dir=data_dir, secret_key=None).create_data_dir()
    upgrade(Settings(data_dir=data_dir, database_url=""))
    assert _mode(data_dir) == 0o750
