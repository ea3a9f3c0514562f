"""The filter of record ids that may have a row: never "no" for an id with a row, "no" for ids
it never saw once loaded, and "maybe" for everything while not loaded."""

import asyncio
import hashlib
import sqlite3
from collections.abc import Iterable
from pathlib import Path

import pytest

from apiforge.idempotency import known as known_module
from apiforge.idempotency.known import KnownKeys


def rid(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def database(path: Path, ids: list[str]) -> str:
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE idempotency_records (id VARCHAR(64) PRIMARY KEY, body BLOB)")
    db.executemany("INSERT INTO idempotency_records VALUES (?, x'00')", [(i,) for i in ids])
    db.commit()
    db.close()
    return str(path)


async def loaded(known: KnownKeys, path: str) -> KnownKeys:
    known.load_soon(path)
    task = known._task
    assert task is not None
    await task
    return known


async def test_maybe_for_every_id_until_loaded(tmp_path: Path) -> None:
    known = KnownKeys()
    assert known.may_hold(rid("anything"))
    path = database(tmp_path / "a.db", [rid(f"stored-{n}") for n in range(500)])
    await loaded(known, path)
    assert all(known.may_hold(rid(f"stored-{n}")) for n in range(500))
    fresh = [rid(f"fresh-{n}") for n in range(2000)]
    assert sum(known.may_hold(i) for i in fresh) <= 2  # a rare false "maybe", never a false "no"


async def test_ids_claimed_before_and_while_loading_are_kept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A claim whose row the load's snapshot can't see (not committed yet) must not be lost."""
    path = database(tmp_path / "a.db", [rid("stored")])
    known = KnownKeys()
    known.add(rid("before"))
    reading = asyncio.Event()
    release = asyncio.Event()
    original = known_module._read

    def slow_read(path: str, more: int, logged: Iterable[str] = ()) -> known_module._Bits:
        asyncio.run_coroutine_threadsafe(_set(reading), loop).result()
        asyncio.run_coroutine_threadsafe(release.wait(), loop).result()
        return original(path, more, logged)

    loop = asyncio.get_running_loop()
    monkeypatch.setattr(known_module, "_read", slow_read)
    known.load_soon(path)
    await reading.wait()
    known.add(rid("during"))
    assert known.may_hold(rid("fresh"))  # still loading: maybe
    release.set()
    assert known._task is not None
    await known._task
    assert known.may_hold(rid("before"))
    assert known.may_hold(rid("during"))
    assert known.may_hold(rid("stored"))
    assert not known.may_hold(rid("fresh"))
    known.add(rid("after"))
    assert known.may_hold(rid("after"))


async def test_the_answer_logs_ids_are_loaded_with_the_rows(tmp_path: Path) -> None:
    """The gateway's answers live in the answer log, not in rows: the filter holds both."""
    path = database(tmp_path / "a.db", [rid("row")])
    logged = [rid(f"logged-{n}") for n in range(300)]
    asked: list[str] = []

    def log_ids() -> list[str]:
        asked.append("now")  # called when the load starts, on the event loop
        return logged

    known = KnownKeys()
    known.load_soon(path, (), log_ids)
    assert asked == ["now"]
    assert known._task is not None
    await known._task
    assert known.may_hold(rid("row"))
    assert all(known.may_hold(i) for i in logged)
    assert sum(known.may_hold(rid(f"fresh-{n}")) for n in range(300)) <= 2


async def _set(event: asyncio.Event) -> None:
    event.set()


async def test_a_full_filter_says_maybe_until_loaded_again_larger(tmp_path: Path) -> None:
    path = database(tmp_path / "a.db", [])
    known = await loaded(KnownKeys(), path)
    capacity = known._bits.capacity
    for n in range(capacity + 1):
        known.add(rid(f"added-{n}"))
    assert known.may_hold(rid("fresh"))  # over capacity: maybe
    database_ids = [rid(f"added-{n}") for n in range(capacity + 1)]
    path = database(tmp_path / "b.db", database_ids)
    await loaded(known, path)
    assert known._bits.capacity > capacity
    assert not known.may_hold(rid("fresh"))
    assert known.may_hold(rid("added-0"))


async def test_a_failed_load_keeps_maybe_and_retries_later(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    known = KnownKeys()
    known.add(rid("claimed"))
    missing = str(tmp_path / "no-such-dir" / "a.db")
    known.load_soon(missing)
    assert known._task is not None
    await known._task
    assert known.may_hold(rid("fresh"))
    known.load_soon(missing)
    assert known._task is None  # not before the retry delay
    clock = known_module.time.monotonic() + known_module.RETRY_SECONDS + 1
    monkeypatch.setattr(known_module.time, "monotonic", lambda: clock)
    await loaded(known, database(tmp_path / "a.db", []))
    assert known.may_hold(rid("claimed"))  # claimed before the failure: still known
    assert not known.may_hold(rid("fresh"))


async def test_adding_answers_whether_the_id_may_have_been_held(tmp_path: Path) -> None:
    known = KnownKeys()
    assert known.add(rid("early"))  # not loaded: maybe
    await loaded(known, database(tmp_path / "a.db", [rid("stored")]))
    assert known.add(rid("stored"))
    assert not known.add(rid("new"))
    assert known.add(rid("new"))
    assert known.may_hold(rid("early"))


async def test_a_reload_keeps_the_claims_still_in_flight(tmp_path: Path) -> None:
    """Claimed while the old filter was ready, their rows not written yet when the new one
    reads the file: the claims in flight are added, not lost with the old filter."""
    path = database(tmp_path / "a.db", [])
    known = await loaded(KnownKeys(), path)
    in_flight = {rid("running"): object()}
    assert not known.add(rid("running"))
    for n in range(known._bits.capacity + 1):  # full: loaded again, larger
        known.add(rid(f"added-{n}"))
    known.load_soon(path, in_flight.keys())
    assert known._task is not None
    await known._task
    assert known.may_hold(rid("running"))  # its row isn't in the file yet
    assert not known.may_hold(rid("fresh"))
