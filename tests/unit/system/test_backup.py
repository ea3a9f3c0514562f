"""`apiforge db backup` (system/backup.py) on a data dir of its own — an SQLite file whatever
backend the suite runs on: what it copies and with what permissions, what it leaves out, and
what it refuses (a destination in use, PostgreSQL) with exit code 2 and one line."""

import os
import sqlite3
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from apiforge.cli import app
from apiforge.core.settings import Settings
from apiforge.system.backup import BackupError, backup

runner = CliRunner()


@pytest.fixture
def loose_umask() -> Iterator[None]:
    """A umask that would leave new files readable by all: the backup must not rely on it."""
    previous = os.umask(0o022)
    yield
    os.umask(previous)


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    """A data dir as a server leaves it: a WAL database, its key, files and an answer log."""
    data = tmp_path / "data"
    data.mkdir()
    with sqlite3.connect(data / "apiforge.db") as db:
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("CREATE TABLE t (n INTEGER)")
        db.executemany("INSERT INTO t VALUES (?)", [(n,) for n in range(100)])
    (data / "secret.key").write_text("k" * 64)
    (data / "signing-nonces.json").write_text("[]")
    stored = data / "files" / "ws1" / "ab"
    stored.mkdir(parents=True)
    (stored / "file1ab").write_bytes(b"12345")
    (data / "files" / ".incoming").mkdir()
    (data / "files" / ".incoming" / "x.part").write_bytes(b"half")
    (data / "files" / ".deleted" / "gone").mkdir(parents=True)
    (data / "files" / ".deleted" / "gone" / "old").write_bytes(b"old")
    log = data / "apiforge.db-answers"
    log.mkdir()
    (log / "owner.lock").write_bytes(b"")
    (log / "000000000001.log").write_bytes(b"sealed segment")
    (log / "000000000001.idx").write_bytes(b"its index")
    (log / "000000000002.log").write_bytes(b"open segment")
    (log / "000000000002.idx.tmp").write_bytes(b"an index a crash cut short")
    (log / "000000000003.idx").write_bytes(b"an index whose segment expired")
    return data


def _settings(data_dir: Path, **values: object) -> Settings:
    return Settings(**{"data_dir": data_dir, "database_url": "", "secret_key": None, **values})


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _tree(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


@pytest.mark.usefixtures("loose_umask")
def test_the_backup_is_a_private_data_dir_with_the_secret_and_the_data(
    data_dir: Path, tmp_path: Path
) -> None:
    dest = tmp_path / "backup"
    summary = backup(_settings(data_dir), dest)
    assert _tree(dest) == {
        "apiforge.db",
        "secret.key",
        "files",
        "files/ws1",
        "files/ws1/ab",
        "files/ws1/ab/file1ab",
        "apiforge.db-answers",
        "apiforge.db-answers/000000000001.log",
        "apiforge.db-answers/000000000001.idx",
        "apiforge.db-answers/000000000002.log",
    }
    assert (dest / "secret.key").read_text() == "k" * 64
    assert _mode(dest / "secret.key") == 0o600
    for path in [dest, *dest.rglob("*")]:
        assert _mode(path) == (0o700 if path.is_dir() else 0o600), path
    with sqlite3.connect(dest / "apiforge.db") as db:
        assert db.execute("SELECT count(*) FROM t").fetchone() == (100,)
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    assert (summary.files, summary.file_bytes, summary.answer_files) == (1, 5, 3)
    line = summary.line(dest)
    assert line.startswith(f"backup written to {dest}: database ")
    assert "secret.key, 1 uploaded files (5 B), answer log 3 files (35 B)" in line


def test_a_key_given_by_environment_is_not_written_to_the_backup(
    data_dir: Path, tmp_path: Path
) -> None:
    dest = tmp_path / "backup"
    summary = backup(_settings(data_dir, secret_key="from-the-environment-" + "x" * 20), dest)
    assert not (dest / "secret.key").exists()
    assert "APIFORGE_SECRET_KEY is set: keep it with the backup" in summary.line(dest)


def test_uploaded_files_kept_elsewhere_are_copied_into_the_backup(
    data_dir: Path, tmp_path: Path
) -> None:
    elsewhere = tmp_path / "shared-files"
    (data_dir / "files").rename(elsewhere)
    dest = tmp_path / "backup"
    backup(_settings(data_dir, files_dir=elsewhere), dest)
    assert (dest / "files" / "ws1" / "ab" / "file1ab").read_bytes() == b"12345"


def test_an_empty_destination_directory_is_used(data_dir: Path, tmp_path: Path) -> None:
    dest = tmp_path / "empty"
    dest.mkdir(mode=0o755)
    backup(_settings(data_dir), dest)
    assert _mode(dest) == 0o700
    assert (dest / "apiforge.db").exists()


def test_a_destination_inside_what_is_backed_up_is_refused(data_dir: Path) -> None:
    with pytest.raises(BackupError) as refused:
        backup(_settings(data_dir), data_dir / "files" / "backup")
    assert refused.value.code == 2
    assert not (data_dir / "files" / "backup").exists()


def _cli(data_dir: Path, *args: str, **env: str | None) -> tuple[int, str]:
    variables: dict[str, str | None] = {
        "APIFORGE_DATA_DIR": str(data_dir),
        "APIFORGE_DATABASE_URL": None,
        "APIFORGE_SECRET_KEY": None,
        "APIFORGE_FILES_DIR": None,
        **env,
    }
    result = runner.invoke(app, ["db", "backup", *args], env=variables)
    return result.exit_code, result.stderr


def test_the_command_prints_one_summary_line(data_dir: Path, tmp_path: Path) -> None:
    dest = tmp_path / "backup"
    result = runner.invoke(
        app,
        ["db", "backup", str(dest)],
        env={"APIFORGE_DATA_DIR": str(data_dir), "APIFORGE_DATABASE_URL": None},
    )
    assert result.exit_code == 0, result.output
    assert result.stdout.count("\n") == 1
    assert result.stdout.startswith(f"backup written to {dest}: database ")


def test_an_existing_non_empty_destination_is_refused_and_left_alone(
    data_dir: Path, tmp_path: Path
) -> None:
    dest = tmp_path / "used"
    dest.mkdir()
    (dest / "keep.txt").write_text("mine")
    code, err = _cli(data_dir, str(dest))
    assert code == 2
    assert err == f"error: {dest} exists and is not empty: give a new directory\n"
    assert _tree(dest) == {"keep.txt"}
    afile = tmp_path / "a-file"
    afile.write_text("x")
    code, err = _cli(data_dir, str(afile))
    assert code == 2
    assert err.count("\n") == 1
    assert "is not a directory" in err


def test_postgresql_is_refused_with_what_to_keep_besides_pg_dump(tmp_path: Path) -> None:
    dest = tmp_path / "backup"
    url = "postgresql+asyncpg://apiforge@db.invalid/apiforge"  # never connected to
    code, err = _cli(tmp_path / "data", str(dest), APIFORGE_DATABASE_URL=url)
    assert code == 2
    assert err.count("\n") == 1
    assert "pg_dump" in err
    assert f"the secret key {tmp_path / 'data' / 'secret.key'}" in err
    assert f"uploaded files in {tmp_path / 'data' / 'files'}" in err
    code, err = _cli(
        tmp_path / "data",
        str(dest),
        APIFORGE_DATABASE_URL=url,
        APIFORGE_SECRET_KEY="s" * 40,
        APIFORGE_FILES_DIR="/srv/apiforge-files",
    )
    assert code == 2
    assert "keep with it APIFORGE_SECRET_KEY and the uploaded files in /srv/apiforge-files" in err
    assert not dest.exists()


def test_a_missing_database_is_an_error_not_a_new_empty_file(tmp_path: Path) -> None:
    code, err = _cli(tmp_path / "nothing", str(tmp_path / "backup"))
    assert code == 1
    assert err.startswith("error: no database at ")
    assert not (tmp_path / "nothing" / "apiforge.db").exists()
    assert not (tmp_path / "backup").exists()


def test_a_symlink_or_a_fifo_in_the_files_tree_fails_the_backup_without_being_followed(
    data_dir: Path, tmp_path: Path
) -> None:
    """The server writes regular files only: what else is there is never followed (a host file
    copied into the backup, a FIFO that would block the copy for ever, `/dev/zero` filling the
    disk), nor silently left out (a workspace directory linked elsewhere)."""
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "host-secret").write_text("not apiforge's")
    stored = data_dir / "files" / "ws1" / "ab"
    for name in ("link", "fifo", "ws2"):
        strange = (data_dir / "files" / name) if name == "ws2" else stored / name
        if name == "link":
            strange.symlink_to(outside / "host-secret")
        elif name == "fifo":
            os.mkfifo(strange)
        else:
            strange.symlink_to(outside, target_is_directory=True)
        dest = tmp_path / f"backup-{name}"
        with pytest.raises(BackupError) as failed:
            backup(_settings(data_dir), dest)
        assert failed.value.code == 1
        assert str(strange) in str(failed.value)
        assert not dest.exists()
        strange.unlink()


def test_a_directory_of_the_files_tree_that_cannot_be_listed_fails_the_backup(
    data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Not a backup reported written without the files of that directory (a failing disk, a
    permission: faked, as the tests may run as root)."""
    unreadable = data_dir / "files" / "ws1"
    listing = os.scandir

    def scandir(path: Any) -> Any:  # also given descriptors (`shutil.rmtree`)
        if isinstance(path, str) and Path(path) == unreadable:
            raise PermissionError(13, "Permission denied", path)
        return listing(path)

    monkeypatch.setattr(os, "scandir", scandir)
    dest = tmp_path / "backup"
    with pytest.raises(BackupError) as failed:
        backup(_settings(data_dir), dest)
    assert "Permission denied" in str(failed.value)
    assert not dest.exists()


def test_a_lost_and_found_directory_of_a_mounted_files_dir_is_not_backed_up(
    data_dir: Path, tmp_path: Path
) -> None:
    (data_dir / "files" / "lost+found").mkdir(mode=0o700)
    (data_dir / "files" / "lost+found" / "#1234").write_bytes(b"fsck's")
    dest = tmp_path / "backup"
    backup(_settings(data_dir), dest)
    assert not (dest / "files" / "lost+found").exists()


def test_a_secret_key_linked_from_elsewhere_is_copied_as_the_key(
    data_dir: Path, tmp_path: Path
) -> None:
    """The server reads the key through a link (a secret mounted elsewhere): so does the copy."""
    kept = tmp_path / "run-secrets-key"
    (data_dir / "secret.key").rename(kept)
    (data_dir / "secret.key").symlink_to(kept)
    dest = tmp_path / "backup"
    assert backup(_settings(data_dir), dest).secret == "secret.key"
    assert not (dest / "secret.key").is_symlink()
    assert (dest / "secret.key").read_text() == "k" * 64
