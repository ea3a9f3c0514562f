"""The embedded database's answer log (`answer_log.py`) on real files and a real migrated SQLite
database: answers count only once their transaction commits, survive sealing, restarts and
crashes, damage becomes a tombstone rather than a second run, another process reads what the owner
committed, and the owner refuses an answer while another process holds a claim of the key."""

import asyncio
import hashlib
import os
import shutil
import sqlite3
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from apiforge.core.db import sqlite_stamp
from apiforge.core.lazydb import SqliteReader
from apiforge.core.settings import Settings
from apiforge.idempotency.answer_log import Answer, AnswerLog, AnswersRefused
from apiforge.idempotency.claims import Claim
from apiforge.idempotency.local_claims import LocalClaims
from apiforge.idempotency.sqlite_db import OwnConnection
from apiforge.idempotency.store import IdempotencyStore
from apiforge.migrate import upgrade
from apiforge.tools.clock import utcnow

DAY = 86400


def rid(name: str) -> str:
    return hashlib.sha256(name.encode()).hexdigest()


@pytest.fixture(scope="module")
def migrated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("answer-log-template")
    upgrade(Settings(data_dir=directory))
    return directory / "apiforge.db"


@pytest.fixture
def database(migrated: Path, tmp_path: Path) -> str:
    path = tmp_path / "apiforge.db"
    shutil.copy(migrated, path)
    return str(path)


def connect(database: str) -> sqlite3.Connection:
    db = sqlite3.connect(database, check_same_thread=False)
    db.execute("PRAGMA journal_mode=WAL")
    return db


@pytest.fixture
async def log(database: str) -> AsyncIterator[AnswerLog]:
    answers = AnswerLog.beside(database, retention_seconds=DAY)
    await answers.open()
    yield answers
    await answers.close()


def answer(name: str, body: bytes = b'{"code":200}', *, marked: bool = True) -> Answer:
    return Answer(rid(name), rid(f"payload-{name}"), 200, {"deprecation": "true"}, body, marked)


def commit(log: AnswerLog, db: sqlite3.Connection, *answers: Answer) -> None:
    """What a charge's writer does: the answers in the transaction, written, committed."""
    for each in answers:
        assert log.write(db, each)
    effect = (f"effect-{answers[0].record_id}",)  # the call's own write, committed with them
    db.execute("INSERT INTO idempotency_tokens (id, principal, expires_at) VALUES (?, 'p', 'x')",
               effect)  # fmt: skip
    log.before_commit(db)
    db.commit()
    for each in answers:
        log.confirm(each)


def markers(db: sqlite3.Connection) -> list[int]:
    """The seqs the committed marker rows cover (a row: the first seq, then 32 bytes an id)."""
    rows = db.execute("SELECT seq, ids FROM idempotency_answer_marks ORDER BY seq")
    return [first + n for first, ids in rows for n in range(len(ids) // 32)]


async def test_a_committed_answer_is_found_and_read_back(log: AnswerLog, database: str) -> None:
    assert log.owner
    db = connect(database)
    first = answer("a", b"x" * 20_000)
    commit(log, db, first)
    found = log.find(rid("a"))
    assert found is not None
    assert found.expires_us > (time.time() + DAY - 60) * 1_000_000
    stored = log.read(found)
    assert stored is not None
    assert (stored.status, stored.headers) == (200, {"deprecation": "true"})
    assert stored.body == first.body
    assert stored.fingerprint == rid("payload-a")
    assert markers(db) == [first.seq]  # until its segment is sealed
    assert log.find(rid("b")) is None


async def test_a_rolled_back_or_unconfirmed_answer_is_never_found(
    log: AnswerLog, database: str
) -> None:
    db = connect(database)
    rolled = answer("rolled")
    assert log.write(db, rolled)
    db.rollback()
    log.after_rollback()
    log.before_commit(db)  # nothing staged any more: writes nothing
    assert rolled.segment is None
    assert log.find(rid("rolled")) is None
    assert markers(db) == []
    failed = answer("failed")
    assert log.write(db, failed)
    log.before_commit(db)  # written...
    db.rollback()  # ...but its transaction did not commit
    log.forget(failed)
    assert log.find(rid("failed")) is None


async def test_a_cancelled_call_s_answer_is_kept_if_written_and_never_written_after(
    log: AnswerLog, database: str
) -> None:
    """`abandon`: the event loop can't tell whether a cancelled call's transaction commits.
    An answer already written counts as committed (a retry replays it); one not written yet is
    refused by the transaction that carries it (its call's effects with it): never both a run
    and a free key."""
    db = connect(database)
    written = answer("written")
    assert log.write(db, written)
    log.before_commit(db)
    assert log.abandon(written)
    db.commit()
    log.confirm(written)
    assert log.find(rid("written")) is not None
    staged, other = answer("staged"), answer("other")
    assert log.write(db, staged)
    assert log.write(db, other)
    assert not log.abandon(staged)  # staged, not written: it never will be
    with pytest.raises(AnswersRefused) as refused:
        log.before_commit(db)
    assert refused.value.record_ids == {rid("staged")}
    assert staged.segment is None  # nothing of the group written
    assert other.segment is None
    db.rollback()
    log.after_rollback()
    assert not log.write(db, staged)  # the writer's retry, one charge at a time, refuses it
    commit(log, db, other)  # and commits the rest
    assert log.find(rid("staged")) is None
    assert log.find(rid("other")) is not None
    late = answer("late")
    assert not log.abandon(late)  # cancelled before its transaction even took it
    assert not log.write(db, late)


async def test_a_live_claim_row_of_another_process_refuses_the_answer(
    log: AnswerLog, database: str
) -> None:
    db = connect(database)
    later = sqlite_stamp(utcnow().replace(year=utcnow().year + 1))
    earlier = sqlite_stamp(utcnow().replace(year=utcnow().year - 1))
    for name, expires in (("held", later), ("dead", earlier)):
        db.execute(
            "INSERT INTO idempotency_records (id, fingerprint, owner, created_at, expires_at) "
            "VALUES (?, 'f', 'o', ?, ?)",
            (rid(name), earlier, expires),
        )
    db.commit()
    held, dead, free = answer("held"), answer("dead"), answer("free")
    for each in (held, dead, free):
        assert log.write(db, each)
    db.execute("INSERT INTO idempotency_tokens VALUES ('effect', 'p', 'x')")  # holds the lock
    with pytest.raises(AnswersRefused) as refused:
        log.before_commit(db)
    assert refused.value.record_ids == {rid("held")}  # an expired row holds nothing
    db.rollback()
    log.after_rollback()
    assert markers(db) == []
    assert held.segment is None
    # The writer's retry, one call at a time: the held key's answer refuses its call alone.
    assert not log.write(db, answer("held"))
    for each in (answer("dead"), answer("free")):
        assert log.write(db, each)
    log.before_commit(db)
    db.commit()
    assert len(markers(db)) == 2
    assert log.write(db, answer("held"))  # refused once, for that retry only


async def test_full_segments_are_sealed_and_their_markers_dropped(database: str) -> None:
    log = AnswerLog.beside(database, retention_seconds=DAY)
    log.segment_records = 3
    await log.open()
    db = connect(database)
    try:
        written = [answer(f"k{n}") for n in range(8)]
        for each in written:
            commit(log, db, each)
        await _settled(log)
        assert len(log._sealed) == 2  # 3 + 3 sealed, 2 still open
        assert len(markers(db)) == 2
        for each in written:
            found = log.find(each.record_id)
            assert found is not None
            stored = log.read(found)
            assert stored is not None
            assert stored.fingerprint == each.fingerprint
        assert sorted(log.known_ids()) == sorted(a.record_id for a in written)  # open ones too
    finally:
        await log.close()
    names = os.listdir(f"{database}-answers")
    assert sum(name.endswith(".idx") for name in names) == 3


async def test_answers_survive_a_restart_and_an_expired_segment_is_swept(database: str) -> None:
    first = AnswerLog.beside(database, retention_seconds=DAY)
    await first.open()
    db = connect(database)
    kept = answer("kept")
    commit(first, db, kept)
    await first.close()  # seals the open segment
    second = AnswerLog.beside(database, retention_seconds=DAY)
    await second.open()
    try:
        assert second.owner
        found = second.find(rid("kept"))
        assert found is not None
        assert second.read(found) is not None
        assert markers(db) == []
        newer = answer("newer")
        commit(second, db, newer)
        assert newer.seq > kept.seq  # sequence numbers go on across restarts
        assert second.sweep(now_us=int(time.time() + DAY + 60) * 1_000_000) == 1
        assert second.find(rid("kept")) is None
        assert second.find(rid("newer")) is not None  # the open segment is never swept
    finally:
        await second.close()


async def test_a_crash_keeps_committed_answers_drops_the_rest_and_marks_lost_ones(
    database: str,
) -> None:
    crashed = AnswerLog.beside(database, retention_seconds=DAY)
    await crashed.open()
    db = connect(database)
    committed, unmarked = answer("committed"), answer("unmarked", marked=False)
    commit(crashed, db, committed, unmarked)
    uncommitted = answer("uncommitted")
    assert crashed.write(db, uncommitted)
    crashed.before_commit(db)  # written, then the process died before its commit
    db.rollback()
    damaged = answer("damaged", b"d" * 5000)
    commit(crashed, db, damaged)
    segment = damaged.segment
    assert segment is not None
    # A power loss left the last record incomplete.
    os.truncate(segment.path, damaged.offset + damaged.length - 100)
    _abandon(crashed)

    recovered = AnswerLog.beside(database, retention_seconds=DAY)
    await recovered.open()
    try:
        assert recovered.owner
        for kept in (committed, unmarked):
            found = recovered.find(kept.record_id)
            assert found is not None
            assert not found.lost
            assert recovered.read(found) is not None
        assert recovered.find(uncommitted.record_id) is None
        lost = recovered.find(damaged.record_id)
        assert lost is not None
        assert lost.lost  # its effects committed: a retry must be refused, not run again
        assert markers(db) == []
        assert segment.path.with_suffix(".idx").exists()  # the crashed segment got sealed
    finally:
        await recovered.close()
    reopened = AnswerLog.beside(database, retention_seconds=DAY)
    await reopened.open()
    try:
        tombstone = reopened.find(damaged.record_id)
        assert tombstone is not None
        assert tombstone.lost  # the tombstone itself survives restarts
    finally:
        await reopened.close()


async def test_another_process_reads_what_the_owner_committed(database: str) -> None:
    owner = AnswerLog.beside(database, retention_seconds=DAY)
    owner.segment_records = 2
    await owner.open()
    reader = AnswerLog.beside(database, retention_seconds=DAY)
    await reader.open()
    db, other = connect(database), connect(database)
    try:
        assert not reader.owner
        first = answer("first")
        commit(owner, db, first)
        found = reader.find(first.record_id, other)
        assert found is not None
        stored = reader.read(found)
        assert stored is not None
        assert stored.body == first.body
        pending = answer("pending")
        assert owner.write(db, pending)
        owner.before_commit(db)  # written, its transaction still open
        assert reader.find(pending.record_id, other) is None  # no committed marker yet
        db.commit()
        owner.confirm(pending)
        assert reader.find(pending.record_id, other) is not None
        third = answer("third")
        commit(owner, db, third)  # the segment of two is full: sealed
        await _settled(owner)
        assert reader.find(first.record_id, other) is not None  # now through the index
        assert reader.find(third.record_id, other) is not None
        assert reader.find(rid("never"), other) is None
    finally:
        await reader.close()
        await owner.close()


async def _settled(log: AnswerLog) -> None:
    """Wait until every full segment is sealed (seals run on the log's maintenance thread)."""
    for _ in range(500):
        if log._open == [log._active]:
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the full segments were not sealed")


def _abandon(log: AnswerLog) -> None:
    """A crash: nothing is sealed or synced, the lock just goes (the process is gone)."""
    if log._task is not None:
        log._task.cancel()
    for segment in log._open:
        if segment.fd >= 0:
            os.close(segment.fd)
            segment.fd = -1
    os.close(log._lock_fd)
    log._lock_fd = -1
    log._closed = True
    log._maintenance.shutdown(wait=True)


async def test_only_a_key_never_seen_is_claimed_without_awaiting(database: str) -> None:
    """`LocalClaims.fresh`, the gateway's common case, claims a key the filter has never held in the
    process that owns the log, and leaves every other case to the lookups of `LocalClaims.claim`:
    a key in flight, one whose answer is stored, any key while the filter is not loaded."""
    settings = Settings(data_dir=Path(database).parent)
    store = IdempotencyStore(settings)
    local = store.local
    assert local is not None
    try:
        assert local.fresh(rid("a"), "f") is None  # the log is not open yet
        found = await local.open_log()
        assert found.owner
        local.known.load_soon(database)  # the filter loads once (until then: "maybe")
        for _ in range(500):
            if not local.known.may_hold(rid("never")):
                break
            await asyncio.sleep(0.01)
        claim = local.fresh(rid("a"), "f")
        assert claim is not None
        assert claim.local
        assert local.inflight[rid("a")] is claim
        assert local.fresh(rid("a"), "f") is None  # in flight: 409 or 422 decided later
        local.settle(claim, committed=False)
        assert rid("a") not in local.inflight
        assert local.fresh(rid("a"), "f") is None  # the filter knows it now: looked up
        reader = SqliteReader(database)
        try:
            again = await local.claim(reader, rid("a"), "f")  # nothing stored: claimed
            assert isinstance(again, Claim)
        finally:
            await reader.close()
    finally:
        await store.close()


async def test_a_process_that_does_not_own_the_log_says_so_once(database: str) -> None:
    """A second process on the file (a second `apiforge serve`) claims keys by rows while the
    owner claims in memory: a key sent to both may run its outside steps in each. It says so in
    the log, once, when its first keyed call opens the log."""
    first = LocalClaims(AnswerLog.beside(database, retention_seconds=DAY), OwnConnection(database))
    second = LocalClaims(AnswerLog.beside(database, retention_seconds=DAY), OwnConnection(database))
    try:
        with capture_logs() as logs:
            assert (await first.open_log()).owner  # the owner: nothing to say
            assert not (await second.open_log()).owner
            await second.open_log()
        assert [(e["event"], e["log_level"]) for e in logs] == [
            ("answer_log_owned_elsewhere", "warning")
        ]
        assert logs[0]["directory"] == str(first.log.directory)
    finally:
        await second.log.close()
        await first.log.close()
