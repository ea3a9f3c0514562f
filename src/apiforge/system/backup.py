"""`apiforge db backup`: a restorable copy of the embedded data dir, taken while a server serves.

The copy is a data dir of its own (docs/operations.md, "Back up and restore"): point
`APIFORGE_DATA_DIR` at it, or copy it into place, and `apiforge serve` starts on it. It holds

- `apiforge.db` — a consistent snapshot of the database, taken with SQLite's online backup API
  (`sqlite3.Connection.backup`, all pages in one step) rather than `VACUUM INTO`: both read the
  database inside one read transaction, but the backup API copies pages as they are, where
  `VACUUM INTO` rebuilds every table and index — several times the CPU, on the core the server
  is using, and a read transaction held that much longer. Neither takes the write lock: in WAL
  mode a reader never blocks a writer, so the server's calls keep committing meanwhile (into the
  WAL, which its PASSIVE checkpoints, core/checkpoint.py, cannot reset before the snapshot ends:
  the WAL grows for the copy's duration, then shrinks again). A step of all pages sees one
  snapshot; smaller steps would restart each time another connection wrote in between, and
  under load might never finish. The copy is checked (`PRAGMA quick_check`) before it counts;
- `secret.key` — what signs tokens, seals stored answers and encrypts fields (without it the
  database is useless); not copied when the key comes from `APIFORGE_SECRET_KEY`, which must
  then be kept with the backup;
- `files/` — the bytes of uploaded files (`APIFORGE_FILES_DIR`, or the data dir's `files/`),
  without uploads still streaming in or deleted workspaces' trees on their way out (nor a mount
  point's `lost+found/`). The server writes regular files only: a symbolic link, a FIFO or a
  directory that cannot be listed fails the backup, never followed nor silently left out;
- `apiforge.db-answers/` — the idempotency answer log (idempotency/answer_log.py).

Not copied: the signed-call nonce file (gateway/signing.py). It only exists after a graceful
stop, and a stale one would let the restored server accept once more a call signed after the
backup; without it the server refuses every call signed before it started, which is safe.

Why the files and the answer log are copied *after* the snapshot, never before: both are
written before the transaction that refers to them commits. A file's bytes are renamed into
place just before its row commits (files/service.py); a marked answer is appended to its
segment just before the transaction that inserts its marker row commits. So whatever row or
marker the snapshot holds had its bytes on the disk before the snapshot began, and a copy made
after it reads them (appends only grow a segment; the page cache serves every reader the same
bytes, synced or not). What may differ is newer than the snapshot, and is harmless:

- a record appended after the snapshot, still without an index in the copy: the restored
  server reads that segment again (idempotency/log_recovery.py) and drops a marked record whose
  marker the snapshot lacks as never committed; a torn last record is cut off by its CRC;
- a segment sealed after the snapshot: its index is copied *before* its segment, so an index
  in the copy always describes a segment that was already complete when it was copied. It may
  list answers committed after the snapshot: a retry of such a key replays the answer the caller
  was given (the call's effects, like every change after the snapshot, are not in the copy);
- a segment or file deleted after the snapshot (an expired segment, a deleted file): left out.
  An expired answer is not replayed anyway; a marker whose record is gone becomes a tombstone at
  the restored server's first start (409 `idempotency_answer_lost`); a file row without its
  bytes (deleted after the snapshot) is listed, and its download answers 503
  `file_content_unavailable`.

So every marker in the snapshot finds its record, or its key is refused: no key whose effects
are in the copy ever runs a second time. Copied the other way round, the database could hold
markers of records written after the log was copied: tombstones for answers that were
perfectly fine, or files whose bytes were never copied.

Everything is written owner-only (directories 0700, files 0600): the copy holds the secret key.
A backup that fails midway removes what it wrote.
"""

import errno
import os
import shutil
import sqlite3
import stat
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from apiforge.core.db import sqlite_file
from apiforge.core.settings import ENV_PREFIX, Settings
from apiforge.files.storage import DELETED, INCOMING
from apiforge.idempotency.answer_log import is_log_file, log_directory
from apiforge.tools.durable import fsync_path

DATABASE = "apiforge.db"
KEY_FILE = "secret.key"
FILES = "files"
# Not the server's: the directory `fsck` keeps on a file system's root (a files dir that is a
# mount point), unreadable but by root.
LOST_AND_FOUND = "lost+found"
# How long opening the source may wait on SQLite's locks (the server's own busy timeout); only
# a recovering WAL, at a server's start, holds a reader back at all.
BUSY_SECONDS = 5.0
_CHUNK = 1024 * 1024


class BackupError(Exception):
    """A backup refused (`code` 2: a wrong destination or database) or failed (1), in one line."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True, slots=True)
class BackupSummary:
    database_bytes: int
    snapshot_seconds: float  # how long the snapshot's read transaction lasted
    secret: str  # what became of the secret key, as the summary says it
    files: int
    file_bytes: int
    answer_files: int
    answer_bytes: int

    def line(self, dest: Path) -> str:
        return (
            f"backup written to {dest}: database {_size(self.database_bytes)} "
            f"(snapshot in {self.snapshot_seconds:.2f} s), {self.secret}, "
            f"{self.files} uploaded files ({_size(self.file_bytes)}), "
            f"answer log {self.answer_files} files ({_size(self.answer_bytes)})"
        )


def backup(settings: Settings, dest: Path) -> BackupSummary:
    """Write a restorable data dir to `dest` (a new or empty directory) from the embedded
    database's data dir, while a server may be serving it. Raises `BackupError`: code 2 on
    PostgreSQL or an unusable destination, 1 when the copy failed (nothing is left in `dest`)."""
    database = sqlite_file(settings.resolved_database_url)
    if not settings.is_sqlite or database is None:
        raise BackupError(_postgresql_advice(settings), code=2)
    if not Path(database).exists():
        raise BackupError(f"no database at {database}; check {ENV_PREFIX}DATA_DIR")
    try:
        created = _prepare(dest, [settings.resolved_files_dir, log_directory(database)])
    except OSError as exc:  # a parent that is a file, a directory not ours to write or list
        raise BackupError(f"cannot write a backup to {dest}: {exc.strerror or exc}", 2) from None
    try:
        return _write(settings, database, dest)
    except (OSError, sqlite3.Error) as exc:
        _discard(dest, created)
        raise BackupError(f"backup failed, nothing kept in {dest}: {_first_line(exc)}") from None
    except BaseException:
        _discard(dest, created)
        raise


def _write(settings: Settings, database: str, dest: Path) -> BackupSummary:
    database_bytes, seconds = _snapshot(database, dest / DATABASE)
    # After the snapshot, never before: see the module docstring.
    if settings.secret_key:
        secret = f"no {KEY_FILE} ({ENV_PREFIX}SECRET_KEY is set: keep it with the backup)"
    elif _copy(settings.data_dir / KEY_FILE, dest / KEY_FILE, follow=True) is None:
        secret = f"no {KEY_FILE} (none created yet)"
    else:
        secret = KEY_FILE
    files, file_bytes = _copy_files(settings.resolved_files_dir, dest / FILES)
    answers = log_directory(str(dest / DATABASE))
    answer_files, answer_bytes = _copy_answer_log(log_directory(database), answers)
    _sync_directory(dest)
    return BackupSummary(
        database_bytes, seconds, secret, files, file_bytes, answer_files, answer_bytes
    )


def _postgresql_advice(settings: Settings) -> str:
    key = (
        f"{ENV_PREFIX}SECRET_KEY"
        if settings.secret_key
        else f"the secret key {settings.data_dir / KEY_FILE}"
    )
    return (
        "`db backup` copies the embedded SQLite database only; on PostgreSQL back the database "
        f"up with pg_dump (e.g. `pg_dump -Fc`), and keep with it {key} and the uploaded files "
        f"in {settings.resolved_files_dir}"
    )


def _prepare(dest: Path, sources: list[Path]) -> bool:
    """Make `dest` an empty owner-only directory; True when it was created here."""
    target = dest.resolve()
    for source in sources:
        if target.is_relative_to(source.resolve()):
            raise BackupError(f"{dest} is inside {source}, which is backed up: give another", 2)
    if dest.exists() or dest.is_symlink():
        if not dest.is_dir():
            raise BackupError(f"{dest} exists and is not a directory: give a new directory", 2)
        if any(dest.iterdir()):
            raise BackupError(f"{dest} exists and is not empty: give a new directory", 2)
        os.chmod(dest, 0o700)
        return False
    dest.mkdir(mode=0o700, parents=True)
    os.chmod(dest, 0o700)  # whatever the umask
    return True


def _discard(dest: Path, created: bool) -> None:
    if created:
        shutil.rmtree(dest, ignore_errors=True)
        return
    for entry in dest.iterdir():
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)


def _snapshot(database: str, target: Path) -> tuple[int, float]:
    """The database as of one instant into `target` (new, 0600): its size, and how long the
    read transaction on the source lasted."""
    os.close(os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    # `mode=rw`: a database that vanished is an error here, never a new empty file.
    uri = Path(database).resolve().as_uri() + "?mode=rw"
    source = sqlite3.connect(uri, uri=True, timeout=BUSY_SECONDS)
    try:
        copy = sqlite3.connect(target)
        try:
            started = time.monotonic()
            source.backup(copy)  # pages=-1: every page in one step, one read transaction
            seconds = time.monotonic() - started
            (verdict,) = copy.execute("PRAGMA quick_check").fetchone()
            if verdict != "ok":
                raise sqlite3.DatabaseError(f"the copy does not check out: {verdict}")
        finally:
            copy.close()
    finally:
        source.close()
    fsync_path(target)
    return target.stat().st_size, seconds


def _copy(source: Path, target: Path, *, follow: bool = False) -> int | None:
    """Copy one regular file to a new owner-only `target`, synced; None (nothing written) when
    the source is gone (deleted since it was listed). A symbolic link is followed only with
    `follow` (the key, which its owner may keep elsewhere): in the files tree and the answer log
    the server writes regular files only, and anything else fails the copy rather than being
    read (a host file, a FIFO that never ends, a device)."""
    flags = os.O_RDONLY | os.O_NONBLOCK | (0 if follow else os.O_NOFOLLOW)
    try:
        source_fd = os.open(source, flags)
    except FileNotFoundError:
        return None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise OSError(f"{source} is a symbolic link, not a file the server wrote") from None
        raise
    with os.fdopen(source_fd, "rb") as reader:
        if not stat.S_ISREG(os.fstat(source_fd).st_mode):
            raise OSError(f"{source} is not a regular file")
        descriptor = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "wb") as writer:
            shutil.copyfileobj(reader, writer, _CHUNK)
            writer.flush()
            os.fsync(writer.fileno())
            return writer.tell()


def _copy_files(root: Path, target: Path) -> tuple[int, int]:
    """The uploaded files' tree (without `.incoming/` and `.deleted/`): (files, bytes)."""
    count = size = 0
    if not root.is_dir():
        return count, size
    for directory, names in _walk(root):
        place = target / directory.relative_to(root)
        place.mkdir(mode=0o700, parents=True, exist_ok=True)
        for name in names:
            copied = _copy(directory / name, place / name)
            if copied is not None:
                count, size = count + 1, size + copied
    return count, size


def _walk(root: Path) -> Iterator[tuple[Path, list[str]]]:
    """`root`'s directories (the root itself may be a link) and their other entries, sorted.
    A directory that cannot be listed fails the walk, as does a linked one (never followed, nor
    silently left out); one deleted meanwhile is skipped."""
    for directory, subdirectories, names in os.walk(root, onerror=_unless_gone):
        if Path(directory) == root:
            skipped = (INCOMING, DELETED, LOST_AND_FOUND)
            subdirectories[:] = [d for d in subdirectories if d not in skipped]
        for name in subdirectories:
            if os.path.islink(os.path.join(directory, name)):
                raise OSError(f"{Path(directory) / name} is a symbolic link, not a directory")
        yield Path(directory), sorted(names)


def _unless_gone(error: OSError) -> None:
    if not isinstance(error, FileNotFoundError):
        raise error


def _copy_answer_log(directory: Path, target: Path) -> tuple[int, int]:
    """The log's segments and indexes: (files, bytes). A segment's index is copied before the
    segment, so an index in the copy always comes with a segment that was complete."""
    count = size = 0
    if not directory.is_dir():
        return count, size
    target.mkdir(mode=0o700)
    segments = sorted(n for n in os.listdir(directory) if is_log_file(n) and n.endswith(".log"))
    for name in segments:
        index = name.removesuffix(".log") + ".idx"
        copied_index = _copy(directory / index, target / index)
        copied = _copy(directory / name, target / name)
        if copied is None:  # expired and deleted meanwhile: its index alone is of no use
            (target / index).unlink(missing_ok=True)
            continue
        count += 1 + (copied_index is not None)
        size += copied + (copied_index or 0)
    return count, size


def _sync_directory(dest: Path) -> None:
    """The new directories' entries on the disk too (not only the files' bytes)."""
    for directory, _ in _walk(dest):
        fsync_path(directory)


def _size(count: int) -> str:
    """Bytes as people read them (decimal units, as `ls -h --si` and `du --si` show them)."""
    if count < 1000:
        return f"{count} B"
    value, unit = float(count), "B"
    for unit in ("kB", "MB", "GB", "TB"):  # noqa: B007 - the last unit reached is the one shown
        value /= 1000
        if value < 1000:
            break
    return f"{value:.1f} {unit}"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
