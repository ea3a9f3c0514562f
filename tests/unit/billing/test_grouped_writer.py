"""SqliteWriter: concurrent charges share one commit and one summed movement per wallet; when a
summed debit does not apply, each charge is done on its own — the ones the balance covers are
written, the rest refused with nothing written."""

import asyncio
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from apiforge.billing.charging import SqliteWriter, WriterCharge
from apiforge.core.commits import CommitRefused
from apiforge.core.errors import UnavailableError

STAMP = "2026-11-21 00:00:00.000000"


def make_db(path: Path, balance: int) -> None:
    with sqlite3.connect(path) as db:
        db.execute(
            "CREATE TABLE wallets (id TEXT PRIMARY KEY, workspace_id TEXT, balance INTEGER "
            "NOT NULL CHECK (balance >= 0), held INTEGER NOT NULL DEFAULT 0, updated_at TEXT)"
        )
        db.execute("CREATE TABLE rows (charge TEXT)")
        db.executemany(
            "INSERT INTO wallets (id, workspace_id, balance) VALUES (?, ?, ?)",
            [("payer", "ws-payer", balance), ("builder", "ws-builder", 0), ("platform", None, 0)],
        )


def charge(name: str, amount: int) -> WriterCharge:
    profit = amount // 3

    def insert(db: sqlite3.Connection) -> bool:
        if name.startswith("refused"):  # a carried row that refuses writes nothing
            return False
        db.execute("INSERT INTO rows VALUES (?)", (name,))
        return True

    def alone(db: sqlite3.Connection) -> str:
        debit = db.execute(
            "UPDATE wallets SET balance = balance - ? WHERE id = 'payer' AND balance - held >= ?",
            (amount, amount),
        )
        if debit.rowcount != 1:
            return "short"
        for wallet, credit in (("builder", profit), ("platform", amount - profit)):
            db.execute("UPDATE wallets SET balance = balance + ? WHERE id = ?", (credit, wallet))
        return "ok" if insert(db) else "refused"

    credits = [("builder", "ws-builder", profit), ("platform", None, amount - profit)]
    return WriterCharge("payer", "ws-payer", amount, credits, STAMP, insert, alone)


def state(path: Path) -> tuple[dict[str, int], list[str]]:
    with sqlite3.connect(path) as db:
        balances = dict(db.execute("SELECT id, balance FROM wallets").fetchall())
        rows = sorted(r for (r,) in db.execute("SELECT charge FROM rows"))
    return balances, rows


async def test_a_group_that_fits_moves_each_wallet_once(tmp_path: Path) -> None:
    path = tmp_path / "w.db"
    make_db(path, 1000)
    writer = SqliteWriter(str(path))
    seen: list[str] = []
    try:
        await writer.submit(charge("warm", 10))  # opens the connection
        assert writer._own.connection is not None
        connection: Any = writer._own.connection
        await connection._execute(lambda: connection._conn.set_trace_callback(seen.append))
        outcomes = await asyncio.gather(*(writer.submit(charge(f"c{i}", 30)) for i in range(20)))
    finally:
        await writer.close()
    assert outcomes == ["ok"] * 20
    debits = [sql for sql in seen if sql.startswith("UPDATE wallets SET balance = balance -")]
    assert len(debits) == seen.count("COMMIT") == 1  # one group: one debit, one commit
    balances, rows = state(path)
    assert balances == {"payer": 1000 - 610, "builder": 3 + 20 * 10, "platform": 7 + 20 * 20}
    assert len(rows) == 21


async def test_a_summed_debit_that_fails_falls_back_to_one_charge_at_a_time(
    tmp_path: Path,
) -> None:
    path = tmp_path / "w.db"
    make_db(path, 100)
    writer = SqliteWriter(str(path))
    try:
        await writer.submit(charge("warm", 1))
        # 99 left: 3 of 30 fit, so the summed 150 does not; the fourth and fifth are refused.
        outcomes = await asyncio.gather(*(writer.submit(charge(f"c{i}", 30)) for i in range(5)))
        after = await writer.submit(charge("after", 9))  # the writer goes on as before
    finally:
        await writer.close()
    assert sorted(outcomes) == ["ok", "ok", "ok", "short", "short"]
    assert after == "ok"
    balances, rows = state(path)
    assert balances["payer"] == 0
    assert sum(balances.values()) == 100  # nothing created or lost
    assert len(rows) == 1 + 3 + 1


async def test_a_failing_row_fails_its_group_and_writes_nothing_of_it(tmp_path: Path) -> None:
    path = tmp_path / "w.db"
    make_db(path, 100)
    writer = SqliteWriter(str(path))
    bad = charge("bad", 5)

    def broken(db: sqlite3.Connection) -> bool:
        db.execute("INSERT INTO no_such_table VALUES (1)")
        return True

    bad.insert = broken
    try:
        await writer.submit(charge("warm", 1))
        outcomes = await asyncio.gather(writer.submit(charge("c", 5)), writer.submit(bad))
        later = await writer.submit(charge("later", 5))
    finally:
        await writer.close()
    assert all(o.startswith("error") for o in outcomes)
    assert later == "ok"
    balances, rows = state(path)
    assert balances["payer"] == 100 - 1 - 5
    assert rows == ["later", "warm"]


async def test_a_refused_charge_moves_nothing_and_its_group_commits(tmp_path: Path) -> None:
    path = tmp_path / "w.db"
    make_db(path, 100)
    writer = SqliteWriter(str(path))
    try:
        await writer.submit(charge("warm", 1))
        outcomes = await asyncio.gather(
            writer.submit(charge("a", 10)),
            writer.submit(charge("refused", 10)),
            writer.submit(charge("b", 10)),
        )
    finally:
        await writer.close()
    assert list(outcomes) == ["ok", "refused", "ok"]
    balances, rows = state(path)
    assert balances["payer"] == 100 - 1 - 20
    assert sum(balances.values()) == 100
    assert rows == ["a", "b", "warm"]


async def test_a_closed_writer_refuses_work_and_opens_nothing(tmp_path: Path) -> None:
    """A charge arriving after shutdown must not open a connection that nothing would close."""
    path = tmp_path / "w.db"
    make_db(path, 100)
    writer = SqliteWriter(str(path))
    await writer.submit(charge("before", 10))
    await writer.close()
    with pytest.raises(UnavailableError):
        await writer.submit(charge("after", 10))
    assert writer._own.connection is None
    assert state(path)[1] == ["before"]


async def test_closing_while_opening_closes_what_was_opened(tmp_path: Path) -> None:
    path = tmp_path / "w.db"
    make_db(path, 100)
    writer = SqliteWriter(str(path))
    first = asyncio.ensure_future(writer.submit(charge("racing", 10)))
    await asyncio.sleep(0)  # the submit is inside its opening
    await writer.close()
    (outcome,) = await asyncio.gather(first, return_exceptions=True)
    assert writer._own.connection is None
    assert outcome == "ok" or isinstance(outcome, UnavailableError)


class Refusing:
    """Commit hooks (core/commits.py) that refuse a group's first commit, naming charges to
    refuse in the writer's one-at-a-time retry; then fail or pass the retry's commit."""

    def __init__(self, refuse: set[str], fail_retry: bool = False) -> None:
        self.refuse, self.fail_retry = refuse, fail_retry
        self.refusing: set[str] = set()
        self.commits = 0
        self.armed = False

    def before_commit(self, db: sqlite3.Connection) -> None:
        if not self.armed:
            return
        self.commits += 1
        if self.commits == 1:
            self.refusing = set(self.refuse)
            raise CommitRefused("held elsewhere")
        if self.fail_retry:
            raise RuntimeError("the disk is full")

    def after_rollback(self) -> None:
        pass


def guarded(name: str, amount: int, hooks: Refusing) -> WriterCharge:
    """A charge whose carried row a hook may refuse after its debit: its own savepoint undoes
    it, as `SqliteCharger`'s statements do (which open no transaction of their own)."""
    plain = charge(name, amount)

    def insert(db: sqlite3.Connection) -> bool:
        if name in hooks.refusing:
            hooks.refusing.discard(name)
            return False
        db.execute("INSERT INTO rows VALUES (?)", (name,))
        return True

    def alone(db: sqlite3.Connection) -> str:
        db.execute("SAVEPOINT charge")
        db.execute("UPDATE wallets SET balance = balance - ? WHERE id = 'payer'", (amount,))
        for wallet, _, credit in plain.credits:
            db.execute("UPDATE wallets SET balance = balance + ? WHERE id = ?", (credit, wallet))
        outcome = "ok" if insert(db) else "refused"
        if outcome != "ok":
            db.execute("ROLLBACK TO charge")
        db.execute("RELEASE charge")
        return outcome

    plain.insert, plain.alone = insert, alone
    return plain


@pytest.mark.parametrize("fail_retry", [False, True])
async def test_a_hook_refusing_a_commit_has_the_group_retried_in_one_transaction(
    tmp_path: Path, fail_retry: bool
) -> None:
    """The refused charge writes and moves nothing, the others commit together; and the retry
    is one transaction (a charge's savepoint must not commit it alone): when its commit fails,
    nothing of the group is kept."""
    path = tmp_path / "w.db"
    make_db(path, 100)
    hooks = Refusing({"b"}, fail_retry)
    writer = SqliteWriter(str(path), [hooks])
    try:
        await writer.submit(guarded("warm", 1, hooks))  # opens the connection
        hooks.armed = True
        outcomes = await asyncio.gather(
            *(writer.submit(guarded(name, 10, hooks)) for name in ("a", "b", "c"))
        )
    finally:
        await writer.close()
    balances, rows = state(path)
    assert sum(balances.values()) == 100
    if fail_retry:
        assert all(o.startswith("error") for o in outcomes)
        assert rows == ["warm"]
        assert balances["payer"] == 100 - 1
    else:
        assert list(outcomes) == ["ok", "refused", "ok"]
        assert rows == ["a", "c", "warm"]
        assert balances["payer"] == 100 - 1 - 20
