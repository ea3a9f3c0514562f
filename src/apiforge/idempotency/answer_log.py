"""The embedded database's store of gateway answers (idempotency keys): an append-only log of
segment files beside the SQLite file (`<database>-answers/`), not rows of `idempotency_records`.

Why: a keyed call stores its whole answer (17.6 KB for `make bench`'s page of posts). As a row,
that answer went through SQLite's pages twice (the WAL, then the checkpoint's copy) and its id
into a B-tree index at a random place (one more page written per call): side by side with the
plain call, +21 % CPU per call. Appended to a file, once, by the transaction's own thread in one
`pwritev` per group commit: +12.6 % (docs/benchmarks.md).

An answer stays exactly as durable as the call's effects:

- **Marked** answers (the call committed effects: a charge, or its steps' writes) are written to
  the log *before* that transaction commits, and the transaction inserts a marker row (one per
  commit, for all the answers it carries: `idempotency_answer_marks`, their first seq and their
  record ids). A record whose marker never committed is garbage, never replayed. A marked id
  whose record was lost (power loss: the log is synced every second, SQLite's WAL by its own
  rules) becomes a tombstone: the key's retry is refused (409 `idempotency_answer_lost`), never
  run a second time.
- **Unmarked** answers (a call that committed nothing) are appended when the call ends.

Which answers exist: this process's answers of the segments still open, in memory; then each
sealed segment's index (written when the segment is full), newest first. Markers only matter
until their segment is sealed, so that table stays small; expired segments are deleted whole. A
crash leaves segments without an index: the next start reads them again (`log_recovery.py`).

One process owns the log (an exclusive lock on `owner.lock`), as one process serves the
embedded database (billing/charging.py). Another process on the same file keeps its claims and
answers in `idempotency_records` (the portable path) and looks answers up in the log as well
(`log_reader.py`); the owner checks `idempotency_records` for a live claim inside each answer's
transaction (`before_commit`). With SQLite's single writer, one of the two always sees the
other, so a key runs once whichever process each request reaches.
"""

import asyncio
import contextlib
import fcntl
import itertools
import os
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import structlog

from apiforge.core.commits import CommitRefused
from apiforge.core.db import sqlite_stamp
from apiforge.idempotency import segments
from apiforge.idempotency.log_reader import LogReader
from apiforge.idempotency.log_recovery import recover, spend
from apiforge.idempotency.segments import LOST, MARKED, Found, Segment, find_sealed, index_segment
from apiforge.tools.clock import utcnow
from apiforge.tools.durable import fsync_path
from apiforge.tools.streaks import FailureStreak

log = structlog.get_logger(__name__)

SEGMENT_BYTES = 256 * 1024 * 1024
SEGMENT_RECORDS = 100_000  # bounds the memory of an open segment's entries
SEGMENT_SECONDS = 3600.0
SYNC_SECONDS = 1.0  # how often the open segment is synced to the disk
SWEEP_SECONDS = 300.0
# The marker of a group's answers, written only when no live claim of their keys is held.
_MARK = (
    "INSERT INTO idempotency_answer_marks (seq, ids) SELECT ?, ? WHERE NOT EXISTS "
    "(SELECT 1 FROM idempotency_records WHERE expires_at > ? AND id IN ({}))"
)
_UNMARK = "DELETE FROM idempotency_answer_marks WHERE seq <= ?"
_LIVE_CLAIMS = "SELECT id FROM idempotency_records WHERE expires_at > ? AND id IN ({})"
_IN_CHUNK = 500  # ids per query (SQLite allows 32,766 parameters; plenty of room)
REFUSING_SECONDS = 1.0  # how long a key found held refuses its answers (the writer's retry)


def log_directory(database: str) -> Path:
    """Where the answer log of the SQLite file `database` lives (beside it)."""
    return Path(f"{database}-answers")


def is_log_file(name: str) -> bool:
    """Whether `name` in the log's directory is part of the log: a segment or its index (not
    the owner's lock, nor an index a crash cut short)."""
    return name.endswith((".log", ".idx"))


class AnswersRefused(CommitRefused):
    """Another process holds live claims of these keys: the transaction must not commit."""

    def __init__(self, record_ids: set[str]) -> None:
        super().__init__(f"{len(record_ids)} key(s) held by another process")
        self.record_ids = record_ids


@dataclass(slots=True)
class Answer:
    """One answer to store; the flush that writes it gives it its seq and its place."""

    record_id: str  # hex, as the store names records
    fingerprint: str
    status: int
    headers: dict[str, str]
    body: bytes
    marked: bool = True
    seq: int = 0
    segment: "Segment | None" = None
    offset: int = 0
    length: int = 0
    expires_us: int = 0
    lost: bool = False  # a tombstone written at recovery
    abandoned: bool = False  # its call was cancelled before it was written: never write it


@dataclass(frozen=True, slots=True)
class Stored:
    status: int
    headers: dict[str, str]
    body: bytes
    fingerprint: str


class AnswerLog:
    """See the module docstring. `open` once (on the event loop) before anything else."""

    def __init__(
        self,
        directory: Path,
        database: str,
        *,
        retention_seconds: int,
        segment_bytes: int = SEGMENT_BYTES,
        segment_records: int = SEGMENT_RECORDS,
        segment_seconds: float = SEGMENT_SECONDS,
    ) -> None:
        self.directory = directory
        self.database = database
        self.retention_us = retention_seconds * 1_000_000
        self.segment_bytes = segment_bytes
        self.segment_records = segment_records
        self.segment_seconds = segment_seconds
        self.owner = False
        self._lock_fd = -1
        self._lock = threading.Lock()  # flushes: place, write, rotate
        self._local = threading.local()  # each writer thread's answers awaiting its commit
        # Keys found held by another process -> when: their answers are refused in the writer's
        # retry of the transaction that found them (each once, and not after a second).
        self._refusing: dict[str, float] = {}
        self._next_seq = 1
        self._numbers: Iterator[int] = itertools.count(1)
        self._active: Segment | None = None
        self._open: list[Segment] = []  # owner: segments without an index yet, oldest first
        self._sealed: list[Segment] = []  # oldest first
        self._reader = LogReader(directory)  # non-owners: the log as this process has read it
        self._maintenance = ThreadPoolExecutor(max_workers=1, thread_name_prefix="answer-log")
        self._db: sqlite3.Connection | None = None  # the maintenance thread's
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[None] | None = None
        self._dirty = False
        self._closed = False
        self._failures = FailureStreak(
            log, "answer_log_upkeep_failed", "answer_log_upkeep_recovered"
        )

    @classmethod
    def beside(cls, database: str, *, retention_seconds: int) -> "AnswerLog":
        return cls(log_directory(database), database, retention_seconds=retention_seconds)

    # --- opening and closing (event loop) ---------------------------------------------------------

    async def open(self) -> None:
        """Take the log (or read it as a non-owner), recover what a crash left, start syncing."""
        self._loop = asyncio.get_running_loop()
        await self._loop.run_in_executor(self._maintenance, self._open_files)
        if self.owner:
            self._task = self._loop.create_task(self._upkeep(), name="answer-log")

    def _open_files(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.directory / "owner.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)  # another process owns the log: read it only
            return
        self._lock_fd, self.owner = fd, True
        try:
            self._recover()
        except BaseException:  # the next keyed call tries again, from the start
            self._drop_open()
            self._lock_fd, self.owner = -1, False
            os.close(fd)
            raise

    def _drop_open(self) -> None:
        """Forget the segments a failed start opened (the next start reads them again)."""
        for segment in self._open:
            if segment.fd >= 0:
                os.close(segment.fd)
                segment.fd = -1
        self._open, self._active = [], None

    async def close(self) -> None:
        """Seal the open segment when every answer in it is settled (else the next start reads
        it), sync, and give the log up."""
        if self._closed:
            return
        self._closed = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._maintenance, self._close_files)
        self._maintenance.shutdown(wait=True)

    def _close_files(self) -> None:
        for segment in self._open:
            if segment.flushed == segment.settled and segment.records:
                self._seal_files(segment)
            elif segment.fd >= 0:
                os.fdatasync(segment.fd)
                os.close(segment.fd)
                segment.fd = -1
                if not segment.records:
                    segment.path.unlink(missing_ok=True)
        for segment in self._sealed:
            if segment.index is not None:
                segment.index.close()
        if self._db is not None:
            self._db.close()
        if self._lock_fd >= 0:
            os.close(self._lock_fd)  # releases the lock
            self._lock_fd = -1

    # --- writing (the thread of the transaction that commits the answer) ------------------------

    def write(self, db: sqlite3.Connection, answer: Answer) -> bool:
        """Stage `answer` for this thread's next commit on `db`, which `before_commit` makes
        good (no statement here: a group commit of many calls checks, marks and writes them at
        once; `db` is the transaction's, as a charge's carried rows take it).
        False, staging nothing, for a key that a claim of another process was found holding
        when this transaction last tried to commit (`AnswersRefused`), or for an answer whose
        call was cancelled (`abandon`): refuse that call."""
        if answer.abandoned:
            return False
        if self._refusing:
            found = self._refusing.pop(answer.record_id, None)
            if found is not None and time.monotonic() - found < REFUSING_SECONDS:
                return False
        staged: list[Answer] | None = getattr(self._local, "staged", None)
        if staged is None:
            staged = self._local.staged = []
        staged.append(answer)
        return True

    def before_commit(self, db: sqlite3.Connection) -> None:
        """Right before this thread's transaction on `db` commits, for the answers it staged:
        insert their marker row — on condition that no other process holds a live claim of
        their keys in `idempotency_records` (the transaction's writes already hold SQLite's
        write lock, so no claim can commit between this check and the commit) — then write
        them to the log (one `pwritev`). One statement for the whole group. Raises
        `AnswersRefused` (roll back, and stage the group again: those keys now refuse their
        calls) or an `OSError`, having written nothing: don't commit."""
        staged: list[Answer] | None = getattr(self._local, "staged", None)
        if not staged:
            return
        self._local.staged = None
        ids = [answer.record_id for answer in staged]
        with self._lock:  # seqs rise through the log: reserved, marked and written together
            if any(answer.abandoned for answer in staged):  # its `write` refuses it next
                raise AnswersRefused({answer.record_id for answer in staged if answer.abandoned})
            first = self._next_seq
            if any(answer.marked for answer in staged):
                keys = b"".join(bytes.fromhex(rid) for rid in ids)
                free = _marked_unless_held(db, first, keys, ids)
            else:
                free = not _live_claims(db, ids)
            if not free:
                held = _live_claims(db, ids)
                self._refuse(held)
                raise AnswersRefused(held)
            self._flush(staged, first)

    def _refuse(self, held: set[str]) -> None:
        now = time.monotonic()
        self._refusing = {
            **{k: t for k, t in self._refusing.items() if now - t < REFUSING_SECONDS},
            **dict.fromkeys(held, now),
        }

    def after_rollback(self) -> None:
        """This thread's transaction rolled back: its staged answers are void."""
        self._local.staged = None

    def _flush(self, answers: list[Answer], seq: int) -> None:
        """Give the answers consecutive seqs from `seq` and write them, in that order, to the
        open segment (under the lock, so seqs rise through the log: `_seal_files` relies on it)."""
        now_us = time.time_ns() // 1000
        expires_us = now_us + self.retention_us
        parts: list[bytes] = []
        lengths: list[int] = []
        for answer in answers:
            answer.seq, answer.expires_us = seq, expires_us
            seq += 1
            record = segments.pack(
                seq=answer.seq,
                created_us=now_us,
                expires_us=expires_us,
                status=answer.status,
                flags=(MARKED if answer.marked else 0) | (LOST if answer.lost else 0),
                record_id=bytes.fromhex(answer.record_id),
                fingerprint=bytes.fromhex(answer.fingerprint),
                headers=orjson.dumps(answer.headers) if answer.headers else b"",
                body=answer.body,
            )
            parts += record
            lengths.append(len(record[0]) + len(record[1]) + len(record[2]))
        total = sum(lengths)
        segment = self._writable(total)
        offset = segment.size
        written = os.pwritev(segment.fd, parts, offset)
        if written != total:  # the disk is full: what was written is past `size`, garbage
            raise OSError(f"answer log: wrote {written} of {total} bytes")
        self._next_seq = seq
        segment.size += total
        segment.records += len(answers)
        segment.flushed += len(answers)
        segment.first_seq = segment.first_seq or answers[0].seq
        segment.last_seq = seq - 1
        for answer, length in zip(answers, lengths, strict=True):
            answer.segment, answer.offset, answer.length = segment, offset, length
            offset += length
        self._dirty = True

    def _writable(self, need: int) -> Segment:
        """The open segment to append `need` bytes to, a new one when it is full (under the
        lock). The one it replaces is sealed once its answers are settled."""
        active = self._active
        assert active is not None, "the answer log is not open for writing"
        full = active.records and (
            active.size + need > self.segment_bytes
            or active.records >= self.segment_records
            or time.monotonic() - active.opened > self.segment_seconds
        )
        if not full:
            return active
        self._active = self._new_segment()
        if active.flushed == active.settled and self._loop is not None:
            self._loop.call_soon_threadsafe(self._seal_soon, active)
        return self._active

    def _new_segment(self) -> Segment:
        number = next(self._numbers)
        path = self.directory / f"{number:012d}.log"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        segment = Segment(number, path, fd)
        self._open.append(segment)
        return segment

    # --- settling (event loop) --------------------------------------------------------------------

    def abandon(self, answer: Answer) -> bool:
        """The call of `answer` was cancelled, so whether its transaction commits is not known
        on the event loop. True: the answer is written already (its transaction was committing:
        treat it as committed, so a retry replays it rather than runs again). False: it was not,
        and it never will be — a transaction that still carries it is refused (the call's
        charge and effects with it), so the key is free and a retry runs once."""
        with self._lock:  # `before_commit` writes under it: either it wrote, or it never will
            if answer.segment is not None:
                return True
            answer.abandoned = True
            return False

    def confirm(self, answer: Answer) -> None:
        """The answer's transaction committed: it can be found and replayed from now on."""
        segment = answer.segment
        if segment is None:
            return
        assert segment.entries is not None
        flags = (MARKED if answer.marked else 0) | (LOST if answer.lost else 0)
        entry = (answer.offset, answer.length, answer.expires_us, flags, answer.seq)
        segment.entries[answer.record_id] = entry
        self._settle(segment)

    def forget(self, answer: Answer) -> None:
        """The answer's transaction did not commit: its record is garbage."""
        segment = answer.segment
        if segment is not None:
            answer.segment = None
            self._settle(segment)

    def _settle(self, segment: Segment) -> None:
        segment.settled += 1
        if segment is not self._active and segment.flushed == segment.settled:
            self._seal_soon(segment)

    def _seal_soon(self, segment: Segment) -> None:
        if segment.sealing or self._closed or self._loop is None:
            return
        segment.sealing = True
        future = self._loop.run_in_executor(self._maintenance, self._seal_files, segment)
        future.add_done_callback(_log_failure)

    def _seal_files(self, segment: Segment) -> None:
        """Maintenance thread: the segment's index, then its markers are no longer needed."""
        if segment.fd >= 0:
            os.fdatasync(segment.fd)
            os.close(segment.fd)
            segment.fd = -1
        index_segment(segment)
        with self._lock:  # markers below the oldest open segment's seqs are needed no more
            older = [s.first_seq for s in self._open if s is not segment and s.first_seq]
        horizon = min([segment.last_seq, *(first - 1 for first in older)])
        db = self._connection()
        db.execute(_UNMARK, (horizon,))
        db.commit()
        # Lookups now use the index (a list swap is atomic for readers on other threads); the
        # lock keeps a new segment that a flush opens meanwhile in `_open`.
        with self._lock:
            self._sealed = [*self._sealed, segment]
            self._open = [s for s in self._open if s is not segment]
        segment.entries = None

    # --- finding and reading ----------------------------------------------------------------------

    def find(self, record_id: str, db: sqlite3.Connection | None = None) -> Found | None:
        """The newest committed answer of `record_id` (maybe expired: the caller checks), or
        None. The owner answers from memory and the sealed indexes; another process reads the
        log's files as they are now, and checks open segments' markers on `db`."""
        if self.owner:
            for segment in reversed(self._open):
                entries = segment.entries  # None once sealed (on the maintenance thread)
                entry = entries.get(record_id) if entries is not None else None
                if entry is not None:
                    offset, length, expires, flags, _ = entry
                    return Found(segment.path, offset, length, expires, bool(flags & LOST))
            return find_sealed(self._sealed, bytes.fromhex(record_id))
        return self._reader.find(record_id, db)

    def read(self, found: Found) -> Stored | None:
        """The answer a `find` pointed at; None when its record can't be read back intact."""
        fd = os.open(found.path, os.O_RDONLY)
        try:
            record = segments.read(fd, found.offset, found.length)
        finally:
            os.close(fd)
        if record is None:
            return None
        head, headers, body = record
        stored = orjson.loads(headers) if headers else {}
        return Stored(head.status, stored, body, head.fingerprint.hex())

    def known_ids(self) -> Iterable[str]:
        """Every record id the log holds (the owner's filter of known keys loads them): the open
        segments' taken now, on the event loop; the sealed ones' read when iterated (on the
        filter's loading thread: a sealed index never changes)."""
        opened: list[str] = []
        for segment in self._open:
            entries = segment.entries  # None once sealed (on the maintenance thread)
            if entries:
                opened += list(entries)
        return itertools.chain(opened, self._sealed_ids(list(self._sealed)))

    @staticmethod
    def _sealed_ids(sealed: list[Segment]) -> Iterator[str]:
        for segment in sealed:
            if segment.index is not None:
                for key in segment.index.ids():
                    yield key.hex()

    # --- recovery and upkeep (maintenance thread) -------------------------------------------------

    def _recover(self) -> None:
        """At open: what a crash left (`log_recovery.recover`), then a new segment opens, and
        tombstones are written for the answers lost — synced before the markers that name
        those answers are spent, or a failed start (a full disk) or a power loss would forget
        the keys and let them run a second time."""
        db = self._connection()
        recovered = recover(self.directory, db)
        self._sealed = recovered.sealed
        self._next_seq = recovered.last_seq + 1
        self._numbers = itertools.count(recovered.last_number + 1)
        self._active = self._new_segment()
        if recovered.lost:
            log.error("idempotency_answers_lost", count=len(recovered.lost))
            tombstones = [
                Answer(rid, "00" * 32, 0, {}, b"", marked=False, lost=True)
                for rid in recovered.lost
            ]
            with self._lock:
                self._flush(tombstones, self._next_seq)
            os.fdatasync(self._active.fd)
            for answer in tombstones:
                self.confirm(answer)
        spend(db)

    def _connection(self) -> sqlite3.Connection:
        if self._db is None:
            self._db = sqlite3.connect(self.database, timeout=5, check_same_thread=False)
        return self._db

    async def _upkeep(self) -> None:
        """Owner: sync the open segment every second; delete expired segments now and then."""
        next_sweep = time.monotonic() + SWEEP_SECONDS
        while True:
            await asyncio.sleep(SYNC_SECONDS)
            sweep = time.monotonic() >= next_sweep
            if sweep:
                next_sweep = time.monotonic() + SWEEP_SECONDS
            await self.upkeep_round(sweep=sweep)

    async def upkeep_round(self, *, sweep: bool) -> None:
        """Sync what was written since the last round, and sweep when asked. A failure (a
        failing disk) is logged and the next round tries again: once a second, so a streak logs
        one traceback, then a line per round."""
        assert self._loop is not None
        try:
            if self._dirty:
                self._dirty = False
                await self._loop.run_in_executor(self._maintenance, self._sync)
            if sweep:
                await self._loop.run_in_executor(self._maintenance, self.sweep)
        except Exception:
            self._failures.failed()
        else:
            self._failures.succeeded()

    def _sync(self) -> None:
        for segment in list(self._open):
            if segment.fd >= 0:
                os.fdatasync(segment.fd)

    def sweep(self, now_us: int | None = None) -> int:
        """Delete the sealed segments whose every answer has expired; how many were."""
        now_us = time.time_ns() // 1000 if now_us is None else now_us
        expired = [
            s for s in self._sealed if s.index is not None and s.index.max_expires_us < now_us
        ]
        if not expired:
            return 0
        self._sealed = [s for s in self._sealed if s not in expired]
        for segment in expired:
            # Unlinked, not unmapped: a lookup on another thread may still be reading its index
            # (its map stays readable until the last reference to it goes).
            segment.index_path.unlink(missing_ok=True)
            segment.path.unlink(missing_ok=True)
        fsync_path(self.directory)
        log.info("idempotency_segments_swept", segments=len(expired))
        return len(expired)


def _marked_unless_held(
    db: sqlite3.Connection, seq: int, keys: bytes, record_ids: list[str]
) -> bool:
    """Insert the marker row of answers `seq`…: False (nothing inserted) when one of their keys
    has a live row in `idempotency_records`."""
    if len(record_ids) > _IN_CHUNK:  # a marker row per statement would be two: check apart
        if _live_claims(db, record_ids):
            return False
        record_ids = record_ids[:1]
    query = _MARK.format(", ".join("?" * len(record_ids)))
    now = sqlite_stamp(utcnow())
    return db.execute(query, (seq, keys, now, *record_ids)).rowcount == 1


def _live_claims(db: sqlite3.Connection, record_ids: list[str]) -> set[str]:
    """Which of `record_ids` have a live row in `idempotency_records` (the portable path's
    claims and answers: the management API's, another process's)."""
    now = sqlite_stamp(utcnow())
    held: set[str] = set()
    for start in range(0, len(record_ids), _IN_CHUNK):
        chunk = record_ids[start : start + _IN_CHUNK]
        query = _LIVE_CLAIMS.format(", ".join("?" * len(chunk)))
        held.update(rid for (rid,) in db.execute(query, (now, *chunk)))
    return held


def _log_failure(future: "asyncio.Future[Any]") -> None:
    """A seal's failure has no awaiter: log it (the next start reads the segment again)."""
    if not future.cancelled() and future.exception() is not None:
        log.error("answer_log_seal_failed", exc_info=future.exception())
