"""Charging gateway calls: reserve before the steps run, settle in the call's transaction.

A priced call goes through three moments:

1. **reserve** (before any step): the caller's wallet must cover the charge, and the amount is
   set aside so that concurrent calls can't spend it twice — else 402 `insufficient_balance`.
2. **settle** (after the steps succeed, in the call's own transaction, before it commits): the
   caller's wallet is debited, the builder's earnings and the platform's revenue credited, the
   ledger entries and the call's request-log row appended. Steps, charge and log commit together
   or not at all.
3. **finish** (always, after the call): a reservation that was not settled is released, so a
   failed call is charged nothing; it answers whether the charge committed (a call cancelled
   as its commit ran was charged, and its committed row is its request-log row).

Two implementations, chosen by the database:

- `SqliteCharger` (the embedded default, one server process): reservations live in process
  memory, against a balance cached per wallet, so reserving costs no database round trip. This is
  exact because every write to a wallet goes through this process (the gateway, or the management
  API in the same process) and tells the cache (`MemoryWallets`). The settle's statements are
  queued to aiosqlite's thread just ahead of the commit the run stage sends next, so they run in
  the same wake-up as that commit: no extra round trip, and SQLite's write lock is held for
  microseconds. Its debit is still conditional (`balance - held >= amount`) and a CHECK
  constraint forbids negative balances: were the cache ever wrong, the whole call is rolled back
  and refused (402) rather than overdrawn, and the balance is read again. A refusal is never
  made on the cache alone (the balance is read first): a second process on the same file
  (`--workers`, another `apiforge serve`) credits wallets without telling this one. Its charges
  stay exact through the conditional debit; only a call may run its steps before being refused.
- `DatabaseCharger` (PostgreSQL, any number of processes): the database is the truth. Reserving
  is one atomic conditional UPDATE of `wallets.held` (`balance - held >= amount`) plus a hold row
  with an expiry, committed at once, so no row lock is held while the steps run and a workspace's
  calls don't queue behind each other. A hold left by a crashed process expires and is swept the
  next time its wallet runs short.
"""

import asyncio
import contextlib
import sqlite3
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import partial
from typing import Any, Protocol

import aiosqlite
import orjson
import structlog
from sqlalchemy import insert, text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from apiforge.billing.ledger import ensure_wallets, lock_order
from apiforge.billing.models import MAX_AMOUNT, PLATFORM_WALLETS, LedgerEntry
from apiforge.core.commits import CommitHooks, CommitRefused
from apiforge.core.db import sqlite_file, sqlite_stamp
from apiforge.core.errors import (
    ApiforgeError,
    ConflictError,
    ForbiddenError,
    NotFoundError,
    PaymentRequiredError,
)
from apiforge.core.lazydb import driver_rows
from apiforge.core.own_sqlite import OwnSqlite
from apiforge.tools.clock import utcnow
from apiforge.tools.ids import new_id
from apiforge.usage.buffer import _storable
from apiforge.usage.models import RequestLog

log = structlog.get_logger(__name__)

REVENUE = PLATFORM_WALLETS["revenue"]
HOLD_TTL = timedelta(minutes=10)  # far above the engine's per-call time budget
MAX_CACHED = 100_000  # wallets (and workspaces) remembered per process
# Where the process's one charger is kept (the gateway state's `extra`): the management API's
# charges (workflows) and wallet writes must reach the same one, whose SQLite cache they keep exact.
CHARGER_KEY = "charger"


class InsufficientBalanceError(PaymentRequiredError):
    message = "The workspace's balance does not cover this call"


def _short(wallet_id: str, debit: int) -> InsufficientBalanceError:
    """The call's 402: `data` as every 402's (`walletId`, `required`: ledger.py's movements),
    with `price` (what the call costs, as answered before `required` was)."""
    return InsufficientBalanceError(
        details={"walletId": wallet_id, "required": debit, "price": debit}
    )


class CallerGoneError(NotFoundError):
    """The calling workspace was deleted while its call ran: its wallet, detached by the
    deletion, is debited no more (nothing of the call is kept)."""

    reason = "workspace_not_found"
    message = "Workspace not found"


class AppGoneError(NotFoundError):
    """The app's workspace (and the app with it) was deleted while a call ran: its earnings
    wallet, detached by the deletion, is credited no more (nothing of the call is kept)."""

    reason = "app_not_found"
    message = "App not found"


class PriceAboveLimitError(ForbiddenError):
    """A price or cost above what one ledger movement may move: refused when saved and
    published, so only a version or `dev` API priced before that rule can ask for it."""

    reason = "price_above_limit"
    message = "The API's price is above the most one call may be charged; it cannot be called"


@dataclass(slots=True)
class Charge:
    """What one call moves: the caller pays `debit`; `profit` goes to the builder's earnings and
    `platform` to the platform's revenue (`profit + platform == debit`)."""

    caller_workspace_id: str
    builder_workspace_id: str
    caller_wallet: str
    earnings_wallet: str
    debit: int
    profit: int
    platform: int
    app_id: str
    api: str
    request_id: str
    hold_id: str | None = None
    settled: bool = False
    pending: bool = False  # SQLite: written in the commit's queue, not confirmed yet
    outcome: str | None = None  # SQLite: what the queued write did ("ok", "short", "error…")
    driver: Any = None  # SQLite: the aiosqlite connection the write was queued on
    waiting: "asyncio.Future[str] | None" = None  # SQLite: the writer's answer (`outcome`)
    # SQLite: more rows to commit with the charge (an idempotency key's answer), written before
    # the charge's own rows in whichever transaction takes them. A row that returns False wrote
    # nothing and refuses the call (nothing of the charge is written): with `refused` (the
    # error's class, made only when raised).
    rows: list[Callable[[sqlite3.Connection], bool]] = field(default_factory=list)
    refused: type[ApiforgeError] = ConflictError


def call_time(log_row: Mapping[str, Any], now: datetime) -> datetime:
    """When a call's ledger entries happened: when the call started, as its request-log row
    (committed with them) says, so `/usage/calls` and `/usage/spend` bucket a call that
    crosses an hour, day or month boundary in the same place. `now` if the row has no time."""
    started = log_row.get("created_at")
    return started if isinstance(started, datetime) else now


def split(price: int, cost: int, *, own_app: bool) -> tuple[int, int, int]:
    """(debit, profit, platform) of a call. A workspace calling its own app pays only the cost:
    paying itself a profit would just turn spendable RU into withdrawable earnings. Price is
    never below cost (checked on save and publish); were it, the platform takes the whole price.
    More than one movement may move (`MAX_AMOUNT`) is 403 `price_above_limit`, nothing moved.
    """
    debit = cost if own_app else price
    if debit > MAX_AMOUNT:  # one comparison, before any wallet is read
        raise PriceAboveLimitError(details={"price": debit, "max": MAX_AMOUNT})
    platform = min(cost, debit)
    return debit, debit - platform, platform


class Charger(Protocol):
    def add_commit_hooks(self, hooks: CommitHooks) -> None:
        """Run `hooks` around every commit and rollback of a charge's transaction."""
        ...

    async def reserve(
        self,
        conn: AsyncConnection,
        *,
        caller_workspace_id: str,
        builder_workspace_id: str,
        debit: int,
        profit: int,
        platform: int,
        app_id: str,
        api: str,
        request_id: str,
    ) -> Charge:
        """Set the charge aside or raise 402; may commit the connection's (read) transaction."""
        ...

    async def settle(
        self, conn: AsyncConnection, charge: Charge, log_row: Mapping[str, Any]
    ) -> None:
        """Write the charge and the call's request-log row (its `amount` set to the debit) in
        the call's transaction."""
        ...

    async def confirm(self, conn: AsyncConnection, charge: Charge) -> None:
        """After the call's commit: raise when the charge turned out not to be written."""
        ...

    async def finish(self, charge: Charge, succeeded: bool) -> bool:
        """After the call, its connection given back: release what was not charged. True when
        the charge committed, also for a call that failed or was cancelled after its settle
        (its commit may have gone through first): its committed log row then says 200."""
        ...

    async def close(self) -> None: ...


class WalletDirectory:
    """workspace id -> its wallet ids, per process. Wallet ids never change (wallets are never
    deleted), so a found entry is good forever; a missing wallet is created on first use."""

    def __init__(self, welcome_credits: int) -> None:
        self.welcome_credits = welcome_credits
        self._ids: dict[str, dict[str, str]] = {}

    async def wallets(self, conn: AsyncConnection, workspace_id: str) -> dict[str, str]:
        found = self._ids.get(workspace_id)
        if found is not None:
            return found
        wallets, _ = await ensure_wallets(conn, workspace_id, welcome_credits=self.welcome_credits)
        if conn.in_transaction():
            # Ends the call's lookups too (reads only): new wallets must be visible to others
            # before the steps run, and SQLite's write lock must not be held through them.
            await conn.commit()
        if len(self._ids) >= MAX_CACHED:
            self._ids.clear()
        self._ids[workspace_id] = wallets
        return wallets


class _Account:
    __slots__ = ("balance", "gen", "held", "pending")

    def __init__(self) -> None:
        self.balance: int | None = None  # committed balance as this process knows it
        self.held = 0  # reserved by calls in flight
        self.pending = 0  # writes started whose outcome is not applied yet
        self.gen = 0  # outcomes applied so far


class MemoryWallets:
    """Balances and reservations of spendable wallets in process memory (SQLite, one process).

    Every write to a wallet brackets itself with `begin_write` / `end_write(delta)`. A balance
    read from the database is kept only when no write was in flight while it was read (none
    pending before or after, none applied in between), so the cache never counts a movement
    twice; an unknown outcome forgets the balance, which is read again on next use. The
    reservation check `balance - held >= amount` can only err towards refusing, never towards
    overdrawing, and a refusal reads the balance first (another process may have credited it).
    """

    def __init__(self) -> None:
        self._accounts: dict[str, _Account] = {}

    def _account(self, wallet_id: str) -> _Account:
        account = self._accounts.get(wallet_id)
        if account is None:
            if len(self._accounts) >= MAX_CACHED:
                idle = [k for k, a in self._accounts.items() if not a.held and not a.pending]
                for key in idle:
                    del self._accounts[key]
            account = self._accounts[wallet_id] = _Account()
        return account

    def known(self, wallet_id: str) -> tuple[int | None, int]:
        """(cached balance or None, held) — for tests and diagnostics."""
        account = self._account(wallet_id)
        return account.balance, account.held

    def reserve_cached(self, wallet_id: str, amount: int) -> bool:
        """The common case without an await: the balance is known and covers `amount`."""
        account = self._accounts.get(wallet_id)
        if account is None or account.balance is None:
            return False
        if account.balance - account.held < amount:
            return False
        account.held += amount
        return True

    async def reserve(self, conn: AsyncConnection, wallet_id: str, amount: int) -> bool:
        """Reserve `amount`, reading the balance when it isn't cached or doesn't cover it: a
        refusal is never made on the cache alone. Another process on the same file (a second
        `apiforge serve`, `--workers`) credits wallets without telling this cache, which would
        otherwise refuse a topped-up wallet until restart. Only refusals pay the read."""
        account = self._account(wallet_id)
        balance = account.balance
        if balance is None or balance - account.held < amount:
            pending, gen = account.pending, account.gen
            balance = await _read_balance(conn, wallet_id)
            if pending == 0 == account.pending and gen == account.gen:
                account.balance = balance
        if balance - account.held < amount:
            return False
        account.held += amount
        return True

    def release(self, wallet_id: str, amount: int) -> None:
        self._account(wallet_id).held -= amount

    def begin_write(self, wallet_id: str) -> None:
        self._account(wallet_id).pending += 1

    def end_write(self, wallet_id: str, delta: int | None, *, released: int = 0) -> None:
        """A write's outcome: `delta` committed (0: nothing happened), or None when unknown."""
        account = self._account(wallet_id)
        account.held -= released
        if delta is None:
            account.balance = None
        elif account.balance is not None:
            account.balance += delta
        account.gen += 1
        account.pending -= 1


async def _read_balance(conn: AsyncConnection, wallet_id: str) -> int:
    [rows] = await driver_rows(conn, (("SELECT balance FROM wallets WHERE id = ?", (wallet_id,)),))
    return int(rows[0][0]) if rows else 0


_ENTRY_COLUMNS = (
    "id, transaction_id, wallet_id, workspace_id, amount, kind, created_at, app_id, api, "
    "request_id, counterparty_workspace_id, reference_id, account_id, note"
)
_ENTRY_VALUES = "(?, ?, ?, ?, ?, 'call', ?, ?, ?, ?, ?, NULL, NULL, '')"
_INSERT_ENTRIES = {
    n: f"INSERT INTO ledger_entries ({_ENTRY_COLUMNS}) VALUES "  # noqa: S608 - constants only
    + ", ".join([_ENTRY_VALUES] * n)
    for n in (2, 3)
}
_LOG_COLUMNS = tuple(column.name for column in RequestLog.__table__.columns)
_INSERT_LOG = (
    f"INSERT INTO request_logs ({', '.join(_LOG_COLUMNS)}) "  # noqa: S608 - constants only
    f"VALUES ({', '.join('?' * len(_LOG_COLUMNS))})"
)
# Each moves a wallet only while it still belongs to the workspace the call read (`IS`: None for
# the platform's): a deletion detaches its workspace's wallets (`workspace_id` NULL), and a
# charge that finds one so moves nothing (`_short_or_gone`). A WHERE condition, no extra statement.
_SQLITE_DEBIT = (
    "UPDATE wallets SET balance = balance - ?, updated_at = ? "
    "WHERE id = ? AND workspace_id = ? AND balance - held >= ?"
)
_SQLITE_CREDIT = (
    "UPDATE wallets SET balance = balance + ?, updated_at = ? WHERE id = ? AND workspace_id IS ?"
)
_SQLITE_CREDIT_2 = (
    "UPDATE wallets SET balance = balance + CASE id WHEN ? THEN ? ELSE ? END, updated_at = ? "
    "WHERE id IN (?, ?) AND workspace_id IS (CASE id WHEN ? THEN ? ELSE ? END)"
)
_SQLITE_OWNER = "SELECT workspace_id FROM wallets WHERE id = ?"
# Log columns whose values need converting for the driver (times as text, JSON as text).
_LOG_CONVERTED = tuple(
    index for index, name in enumerate(_LOG_COLUMNS) if name in ("created_at", "args")
)


def _short_or_gone(db: sqlite3.Connection, wallet: str, workspace_id: str) -> str:
    """Why a charge's conditional debit moved nothing (read only then): "caller_gone" when the
    wallet no longer belongs to the calling workspace (deleted meanwhile), else "short"."""
    row = db.execute(_SQLITE_OWNER, (wallet,)).fetchone()
    return "short" if row is not None and row[0] == workspace_id else "caller_gone"


def _nothing() -> None:
    """A round trip to aiosqlite's thread that waits for what was queued before it."""


def _sqlite_value(value: Any) -> Any:
    if isinstance(value, datetime):
        return sqlite_stamp(value)  # already UTC (tools.clock)
    if isinstance(value, dict | list):
        return orjson.dumps(value).decode()
    return value


@dataclass(slots=True)
class WriterCharge:
    """One charge as the writer applies it: its rows (`insert`: ledger entries, request log) run
    at once; its wallet movements are summed with the group's and applied once per wallet just
    before the commit. `alone` is the whole charge done by itself (conditional debit first; an
    outcome but "ok" having written nothing), for when a summed movement does not apply. Each
    wallet moves only while it belongs to its workspace (`workspace_id`: the debited wallet's;
    a credit's second item: None for the platform's)."""

    wallet: str
    workspace_id: str
    debit: int
    credits: list[tuple[str, str | None, int]]
    stamp: str
    insert: Callable[[sqlite3.Connection], bool]  # False: refused, nothing written
    alone: Callable[[sqlite3.Connection], str]


class SqliteWriter:
    """The process's own write connection for charges of calls that wrote nothing themselves
    (most calls: reads are served without checking a pooled connection out). Charges queue on
    its thread; each inserts its rows, and a commit follows when no other charge is waiting (or
    after `GROUP`), so concurrent calls share one commit — SQLite's cost of a write is mostly
    the commit's pages. The group's wallet movements are summed per wallet and applied once,
    right before its commit: one conditional debit per paying wallet (`balance - held >= sum`
    holds exactly when each debit in turn would have), one credit per credited wallet, each
    only while the wallet belongs to its workspace. Should a summed movement not apply (the
    balance cache was wrong, a workspace was deleted meanwhile), the group is rolled back and
    its charges done one by one, each refused or written on its own. A charge's caller learns its
    outcome only once it is committed."""

    GROUP = 64

    def __init__(self, path: str, hooks: list[CommitHooks] | None = None) -> None:
        self.path = path
        self.hooks = [] if hooks is None else hooks
        self._own = OwnSqlite(path)
        # Used on the writer thread only: the group's charges since the last commit.
        self._pending: list[tuple[asyncio.Future[str], WriterCharge]] = []

    async def submit(self, charge: WriterCharge) -> str:
        return await (await self.queue(charge))

    async def queue(self, charge: WriterCharge) -> "asyncio.Future[str]":
        """Queue `charge`; the future answers its outcome once it is committed (or refused).
        The writer goes on with it whether or not anyone still waits for the answer."""
        connection = self._own.connection or await self._own.get()
        loop = asyncio.get_running_loop()
        future: asyncio.Future[str] = loop.create_future()
        queue = connection._tx
        queue.put_nowait((None, partial(self._run, connection, charge, future)))
        return future

    def _run(
        self,
        connection: aiosqlite.Connection,
        charge: WriterCharge,
        future: "asyncio.Future[str]",
    ) -> None:
        """On the writer thread."""
        db = connection._conn
        self._pending.append((future, charge))
        try:
            if not charge.insert(db):  # refused: wrote nothing, moves nothing
                self._pending.pop()
                future.get_loop().call_soon_threadsafe(_succeed, future, "refused")
        except BaseException as exc:
            self._fail_group(db, exc)
            return
        if len(self._pending) < self.GROUP and not connection._tx.empty():
            return  # another charge is waiting: it commits for both
        self._commit(db)

    def _commit(self, db: sqlite3.Connection) -> None:
        """On the writer thread: the group's summed wallet movements, then its commit."""
        pending, self._pending = self._pending, []
        if not pending:
            return
        debits: dict[str, int] = {}
        credits: dict[str, int] = {}
        owners: dict[str, str | None] = {}  # wallet -> its workspace, as the charges read it
        stamp = ""
        for _, charge in pending:
            debits[charge.wallet] = debits.get(charge.wallet, 0) + charge.debit
            owners[charge.wallet] = charge.workspace_id
            for wallet, owner, amount in charge.credits:
                credits[wallet] = credits.get(wallet, 0) + amount
                owners[wallet] = owner
            stamp = max(stamp, charge.stamp)
        outcomes: list[str] | None = None
        try:
            for wallet, amount in debits.items():
                debit = (amount, stamp, wallet, owners[wallet], amount)
                if db.execute(_SQLITE_DEBIT, debit).rowcount != 1:
                    break
            else:
                for wallet, amount in credits.items():
                    credit = (amount, stamp, wallet, owners[wallet])
                    if db.execute(_SQLITE_CREDIT, credit).rowcount != 1:
                        break
                else:
                    outcomes = ["ok"] * len(pending)
            try:
                if outcomes is None:
                    raise CommitRefused("a summed movement did not apply")
                _before_commit(self.hooks, db)
            except CommitRefused:
                # Start again, one charge at a time: a debit the balance can't cover, a wallet
                # detached by a deletion, or a row a hook refuses, refuses that charge alone.
                db.rollback()
                _rolled_back(self.hooks)
                db.execute("BEGIN")  # one transaction: a charge's savepoint must not commit it
                outcomes = [charge.alone(db) for _, charge in pending]
                _before_commit(self.hooks, db)
            db.commit()
        except BaseException as exc:
            self._pending = pending
            self._fail_group(db, exc)
            return
        for (waiting, _), outcome in zip(pending, outcomes, strict=True):
            waiting.get_loop().call_soon_threadsafe(_succeed, waiting, outcome)

    def _fail_group(self, db: sqlite3.Connection, exc: BaseException) -> None:
        """A statement or the commit failed: nothing pending was written."""
        with contextlib.suppress(Exception):
            db.rollback()
        _rolled_back(self.hooks)
        pending, self._pending = self._pending, []
        for waiting, _ in pending:
            waiting.get_loop().call_soon_threadsafe(_fail, waiting, exc)

    async def close(self) -> None:
        """Commit what waits (a charge always expects a later commit), then close."""
        await self._own.close(self._commit)


def _before_commit(hooks: list[CommitHooks], db: sqlite3.Connection) -> None:
    for each in hooks:
        each.before_commit(db)


def _rolled_back(hooks: list[CommitHooks]) -> None:
    for each in hooks:
        with contextlib.suppress(Exception):  # the rollback stands whatever a hook does
            each.after_rollback()


def _succeed(future: "asyncio.Future[str]", outcome: str) -> None:
    if not future.done():
        future.set_result(outcome)


def _fail(future: "asyncio.Future[str]", exc: BaseException) -> None:
    if not future.done():
        future.set_result(f"error: {exc!r}")


class SqliteCharger:
    """Charging on the embedded database: see the module docstring."""

    def __init__(self, welcome_credits: int, writer: SqliteWriter | None = None) -> None:
        self.directory = WalletDirectory(welcome_credits)
        self.memory = MemoryWallets()
        self.writer = writer
        self.hooks: list[CommitHooks] = writer.hooks if writer is not None else []

    def add_commit_hooks(self, hooks: CommitHooks) -> None:
        self.hooks.append(hooks)

    async def close(self) -> None:
        if self.writer is not None:
            await self.writer.close()

    async def reserve(
        self,
        conn: AsyncConnection,
        *,
        caller_workspace_id: str,
        builder_workspace_id: str,
        debit: int,
        profit: int,
        platform: int,
        app_id: str,
        api: str,
        request_id: str,
    ) -> Charge:
        ids = self.directory._ids
        caller, builder = ids.get(caller_workspace_id), ids.get(builder_workspace_id)
        if caller is None or builder is None:
            caller = await self.directory.wallets(conn, caller_workspace_id)
            builder = await self.directory.wallets(conn, builder_workspace_id)
        if not self.memory.reserve_cached(caller["balance"], debit) and not (
            await self.memory.reserve(conn, caller["balance"], debit)
        ):
            raise _short(caller["balance"], debit)
        return Charge(
            caller_workspace_id,
            builder_workspace_id,
            caller["balance"],
            builder["earnings"],
            debit,
            profit,
            platform,
            app_id,
            api,
            request_id,
        )

    async def settle(
        self, conn: AsyncConnection, charge: Charge, log_row: Mapping[str, Any]
    ) -> None:
        # The call's time (its log row's) for its entries and its wallets' `updated_at` alike:
        # one stamp formatted per call on this hot path.
        now = call_time(log_row, utcnow())
        stamp = sqlite_stamp(now)
        transaction_id = new_id()
        # Entry ids: the transaction's id with its last character replaced (the transaction id
        # itself ends in "0"), so one id is minted per call, not one per entry.
        base = transaction_id[:-1]
        transaction_id = base + "0"
        entries: list[Any] = [
            base + "1",
            transaction_id,
            charge.caller_wallet,
            charge.caller_workspace_id,
            -charge.debit,
            stamp,
            charge.app_id,
            charge.api,
            charge.request_id,
            charge.builder_workspace_id,
        ]
        credits: list[tuple[str, str | None, int]] = []
        if charge.profit:
            credits.append((charge.earnings_wallet, charge.builder_workspace_id, charge.profit))
            entries += [base + "2", transaction_id, charge.earnings_wallet]
            entries += [charge.builder_workspace_id, charge.profit, stamp, charge.app_id]
            entries += [charge.api, charge.request_id, charge.caller_workspace_id]
        if charge.platform:
            credits.append((REVENUE, None, charge.platform))
            entries += [base + "3", transaction_id, REVENUE, None, charge.platform, stamp]
            entries += [charge.app_id, charge.api, charge.request_id, charge.caller_workspace_id]
        entries_sql = _INSERT_ENTRIES[1 + len(credits)]
        if len(credits) == 2:  # both credits in one statement
            (w1, o1, a1), (w2, o2, a2) = credits
            credit: tuple[str, tuple[Any, ...]] | None = (
                _SQLITE_CREDIT_2,
                (w1, a1, a2, stamp, w1, w2, w1, o1, o2),
            )
        elif credits:
            (w1, o1, a1) = credits[0]
            credit = (_SQLITE_CREDIT, (a1, stamp, w1, o1))
        else:
            credit = None
        # The row says what the call cost its caller: the debit its entries carry.
        row = _storable({**log_row, "id": transaction_id, "amount": charge.debit})
        log_values = [row[column] for column in _LOG_COLUMNS]
        for index in _LOG_CONVERTED:
            log_values[index] = _sqlite_value(log_values[index])
        debit_params = (
            charge.debit,
            stamp,
            charge.caller_wallet,
            charge.caller_workspace_id,
            charge.debit,
        )

        def insert(db: sqlite3.Connection) -> bool:
            """The charge's rows; False (nothing written) when a carried row refuses."""
            for row in charge.rows:
                if not row(db):
                    return False
            db.execute(entries_sql, entries)
            db.execute(_INSERT_LOG, log_values)
            return True

        def statements(db: sqlite3.Connection, alone: bool = False) -> str:
            """The whole charge (no commit): "short" when the debit didn't apply, "caller_gone"
            or "app_gone" when a wallet no longer belongs to the caller's or the app's
            workspace (deleted meanwhile), "refused" when a carried row refused; then nothing
            of it was written. A charge refused after its debit (a carried row, a detached
            earnings wallet) is undone by a savepoint when it carries rows or shares the
            writer's transaction (`alone`); in the call's own transaction, by its rollback."""
            guarded = alone or bool(charge.rows)
            if guarded:
                db.execute("SAVEPOINT charge")
            outcome = "ok"
            if db.execute(_SQLITE_DEBIT, debit_params).rowcount != 1:
                outcome = _short_or_gone(db, charge.caller_wallet, charge.caller_workspace_id)
            elif credit is not None and db.execute(*credit).rowcount != len(credits):
                outcome = "app_gone"
            elif not insert(db):
                outcome = "refused"
            if guarded:
                if outcome != "ok":
                    db.execute("ROLLBACK TO charge")
                db.execute("RELEASE charge")
            return outcome

        self.memory.begin_write(charge.caller_wallet)
        charge.pending = True
        if self.writer is not None and getattr(conn, "sync_connection", None) is None:
            # The call never used its own connection (it wrote nothing): the charge commits on
            # the process's writer, together with the charges of concurrent calls.
            grouped = WriterCharge(
                charge.caller_wallet,
                charge.caller_workspace_id,
                charge.debit,
                credits,
                stamp,
                insert,
                partial(statements, alone=True),
            )
            charge.waiting = await self.writer.queue(grouped)
            # Shielded: a call cancelled while it waits still learns (`finish`) what the writer
            # did with its charge, which it commits anyway.
            charge.outcome = await asyncio.shield(charge.waiting)
            self._conclude(charge)
            return
        raw = await conn.get_raw_connection()
        driver: Any = raw.driver_connection
        charge.driver = driver
        hooks = self.hooks

        def write() -> None:
            """Runs in aiosqlite's thread: the statements and the commit of the whole call
            (steps included), or its rollback when the debit can't be made. The commit the
            run stage sends next then has nothing left to do."""
            db: sqlite3.Connection = driver._conn
            try:
                if charge.rows and not db.in_transaction:
                    db.execute("BEGIN")  # a read-only call's savepoint must not commit by itself
                outcome = statements(db)
                if outcome == "ok":
                    _before_commit(hooks, db)
                    db.commit()
                else:
                    db.rollback()
                    _rolled_back(hooks)
            except CommitRefused:
                db.rollback()
                _rolled_back(hooks)
                outcome = "refused"
            except BaseException as exc:
                db.rollback()
                _rolled_back(hooks)
                outcome = f"error: {exc!r}"
            charge.outcome = outcome

        queue = getattr(driver, "_tx", None)
        if queue is None:  # another aiosqlite layout: one hop of its own
            await driver._execute(write)
        else:
            # Queued without a future: the thread runs it right before the commit the run stage
            # queues next, in the same wake-up, so the charge costs no round trip of its own;
            # `confirm` reads the outcome once that commit has returned.
            queue.put_nowait((None, write))

    async def confirm(self, conn: AsyncConnection, charge: Charge) -> None:
        """After the call's commit returned: the charge is final, or the call fails."""
        if not charge.pending:
            return
        if charge.outcome is None:
            # The run's commit sent nothing to the thread (SQLAlchemy had no transaction of its
            # own). The call is over (this is the last stage), so the connection goes back to
            # the pool now; then a round trip behind the queued write (which commits by itself).
            driver: Any = charge.driver
            await conn.close()
            if charge.outcome is None:
                await driver._execute(_nothing)
        self._conclude(charge)

    def _conclude(self, charge: Charge) -> None:
        """The charge is final (`ok`), or the call fails: nothing of it was committed."""
        self._settled(charge)
        if charge.outcome == "ok":
            return
        if charge.outcome == "refused":
            raise charge.refused()
        if charge.outcome == "caller_gone":
            raise CallerGoneError()
        if charge.outcome == "app_gone":
            raise AppGoneError()
        if charge.outcome == "short":
            raise _short(charge.caller_wallet, charge.debit)
        raise RuntimeError("the call's charge could not be written")

    def _settled(self, charge: Charge) -> None:
        """The write's outcome into the wallet cache; the reservation is accounted for."""
        charge.pending = False
        charge.settled = True
        outcome = charge.outcome
        delta: int | None = 0
        if outcome == "ok":
            delta = -charge.debit
        elif outcome == "short":
            # The database holds less than this process believed: trust the database.
            log.warning("wallet_cache_stale", wallet_id=charge.caller_wallet)
            delta = None
        elif outcome is None:  # not known: the balance is read again on next use
            delta = None
        elif outcome not in ("refused", "caller_gone", "app_gone"):
            log.error("charge_failed", wallet_id=charge.caller_wallet, outcome=outcome)
        self.memory.end_write(charge.caller_wallet, delta, released=charge.debit)

    async def finish(self, charge: Charge, succeeded: bool) -> bool:
        if charge.pending:
            # Queued but never confirmed (the call was cancelled, or failed after its settle):
            # the queued write runs all the same, so its outcome is waited for.
            try:
                await _written(charge)
            finally:
                self._settled(charge)
        elif not charge.settled:
            self.memory.release(charge.caller_wallet, charge.debit)
        return charge.outcome == "ok"


async def _written(charge: Charge) -> None:
    """Until a queued charge's write has run (`charge.outcome` set), if it can be known."""
    if charge.outcome is not None:
        return
    try:
        if charge.waiting is not None:  # the writer answers even when it fails
            charge.outcome = await charge.waiting
        elif charge.driver is not None:  # a round trip behind the write, on its thread
            await charge.driver._execute(_nothing)
    except Exception:  # closed: what was queued before ran, or the outcome stays unknown
        log.warning("charge_outcome_unknown", wallet_id=charge.caller_wallet, exc_info=True)


_RESERVE = text(
    "WITH w AS (UPDATE wallets SET held = held + :a "
    "WHERE id = :w AND balance - held >= :a RETURNING id) "
    "INSERT INTO wallet_holds (id, wallet_id, amount, expires_at) "
    "SELECT :h, w.id, :a, :exp FROM w RETURNING id"
)
_SWEEP = text(
    "WITH gone AS (DELETE FROM wallet_holds WHERE wallet_id = :w AND expires_at < :now "
    "RETURNING amount) "
    "UPDATE wallets SET held = held - (SELECT COALESCE(SUM(amount), 0) FROM gone) "
    "WHERE id = :w AND EXISTS (SELECT 1 FROM gone)"
)
_PG_DEBIT = text(
    "WITH h AS (DELETE FROM wallet_holds WHERE id = :h RETURNING amount) "
    "UPDATE wallets SET balance = balance - :a, "
    "held = held - COALESCE((SELECT amount FROM h), 0), updated_at = :now "
    "WHERE id = :w AND workspace_id = :ws "
    "AND balance - :a >= held - COALESCE((SELECT amount FROM h), 0) "
    "RETURNING id"
)
# Both move a wallet only while it belongs to the workspace the call read (None: the platform's);
# PostgreSQL re-checks that on the row a deletion that committed meanwhile wrote.
_PG_CREDIT = text(
    "UPDATE wallets SET balance = balance + :a, updated_at = :now "
    "WHERE id = :w AND workspace_id IS NOT DISTINCT FROM :ws"
)
_PG_OWNER = text("SELECT workspace_id FROM wallets WHERE id = :w")
_RELEASE = text(
    "WITH h AS (DELETE FROM wallet_holds WHERE id = :h RETURNING wallet_id, amount) "
    "UPDATE wallets SET held = wallets.held - h.amount FROM h WHERE wallets.id = h.wallet_id"
)
_INSERT_ENTRY = insert(LedgerEntry)
_INSERT_LOG_ROW = insert(RequestLog)


class DatabaseCharger:
    """Charging with the database as the only truth (PostgreSQL, several processes)."""

    def __init__(self, engine: AsyncEngine, welcome_credits: int) -> None:
        self.engine = engine
        self.directory = WalletDirectory(welcome_credits)

    def add_commit_hooks(self, hooks: CommitHooks) -> None:
        """Nothing to run: on PostgreSQL an answer is a row of the call's own transaction."""

    async def reserve(
        self,
        conn: AsyncConnection,
        *,
        caller_workspace_id: str,
        builder_workspace_id: str,
        debit: int,
        profit: int,
        platform: int,
        app_id: str,
        api: str,
        request_id: str,
    ) -> Charge:
        caller = await self.directory.wallets(conn, caller_workspace_id)
        builder = await self.directory.wallets(conn, builder_workspace_id)
        wallet, hold_id = caller["balance"], new_id()
        now = utcnow()
        params = {"a": debit, "w": wallet, "h": hold_id, "exp": now + HOLD_TTL}
        reserved = (await conn.execute(_RESERVE, params)).first() is not None
        if not reserved:
            # Holds of crashed processes are swept only when they stand in a caller's way.
            swept = await conn.execute(_SWEEP, {"w": wallet, "now": now})
            if swept.rowcount:
                reserved = (await conn.execute(_RESERVE, params)).first() is not None
        await conn.commit()  # the hold is visible to every process; no lock is kept
        if not reserved:
            raise _short(wallet, debit)
        return Charge(
            caller_workspace_id,
            builder_workspace_id,
            wallet,
            builder["earnings"],
            debit,
            profit,
            platform,
            app_id,
            api,
            request_id,
            hold_id=hold_id,
        )

    async def settle(
        self, conn: AsyncConnection, charge: Charge, log_row: Mapping[str, Any]
    ) -> None:
        now = utcnow()
        transaction_id = new_id()
        common = {
            "transaction_id": transaction_id,
            "kind": "call",
            "created_at": call_time(log_row, now),
            "app_id": charge.app_id,
            "api": charge.api,
            "request_id": charge.request_id,
            "note": "",
        }
        entries = [
            {
                **common,
                "id": new_id(),
                "wallet_id": charge.caller_wallet,
                "workspace_id": charge.caller_workspace_id,
                "amount": -charge.debit,
                "counterparty_workspace_id": charge.builder_workspace_id,
            }
        ]
        moves: list[tuple[str, str | None, int]] = [
            (charge.caller_wallet, charge.caller_workspace_id, -charge.debit)
        ]
        if charge.profit:
            moves.append((charge.earnings_wallet, charge.builder_workspace_id, charge.profit))
            entries.append(
                {
                    **common,
                    "id": new_id(),
                    "wallet_id": charge.earnings_wallet,
                    "workspace_id": charge.builder_workspace_id,
                    "amount": charge.profit,
                    "counterparty_workspace_id": charge.caller_workspace_id,
                }
            )
        if charge.platform:
            moves.append((REVENUE, None, charge.platform))
            entries.append(
                {
                    **common,
                    "id": new_id(),
                    "wallet_id": REVENUE,
                    "workspace_id": None,
                    "amount": charge.platform,
                    "counterparty_workspace_id": charge.caller_workspace_id,
                }
            )
        # The entries' foreign keys lock their wallet rows (FOR KEY SHARE, one row after the
        # other): in the global order too, the one a deletion locks its workspaces' wallets in
        # before its cascade detaches them (`ledger.lock_wallets`). In the order written, the
        # caller's wallet was held while the builder's was waited for, and an account's
        # deletion detaching the builder's workspace's wallets first deadlocked with the call.
        entries.sort(key=lambda entry: lock_order(str(entry["wallet_id"])))
        await conn.execute(_INSERT_ENTRY, entries)
        await conn.execute(_INSERT_LOG_ROW, [_storable({**log_row, "amount": charge.debit})])
        # Wallet rows last (their locks are held until the commit) and in the global order.
        # A wallet detached by a deletion meanwhile refuses the call (its transaction rolls back).
        for wallet, owner, amount in sorted(moves, key=lambda move: lock_order(move[0])):
            params = {"a": abs(amount), "w": wallet, "ws": owner, "now": now}
            if amount < 0:
                if (await conn.execute(_PG_DEBIT, {**params, "h": charge.hold_id})).first() is None:
                    if await conn.scalar(_PG_OWNER, {"w": wallet}) != owner:
                        raise CallerGoneError()
                    raise _short(wallet, charge.debit)
            elif (await conn.execute(_PG_CREDIT, params)).rowcount != 1:
                raise AppGoneError()
        charge.settled = True

    async def confirm(self, conn: AsyncConnection, charge: Charge) -> None:
        """The settle ran its statements in the call's transaction, which has committed."""

    async def close(self) -> None:
        """Nothing of its own to close (it uses the engine's pool)."""

    async def finish(self, charge: Charge, succeeded: bool) -> bool:
        """A settled, committed call's hold is gone with its commit; any other hold is
        released now (also when the settle ran but its transaction rolled back). The debit
        deletes the hold in the call's transaction, so a settled call whose hold is gone was
        charged: its commit went through before it failed or was cancelled (the release waits
        on the hold's row lock while that transaction is still ending)."""
        if charge.settled and succeeded:
            return True
        try:
            async with self.engine.begin() as conn:
                released = (await conn.execute(_RELEASE, {"h": charge.hold_id})).rowcount
        except Exception:  # the hold expires on its own; the call's answer must not change
            log.exception("wallet_hold_release_failed", hold_id=charge.hold_id)
            return False
        return charge.settled and released == 0


def make_charger(engine: AsyncEngine, welcome_credits: int) -> SqliteCharger | DatabaseCharger:
    if engine.dialect.name == "sqlite":
        path = sqlite_file(engine.url)
        return SqliteCharger(welcome_credits, None if path is None else SqliteWriter(path))
    return DatabaseCharger(engine, welcome_credits)
