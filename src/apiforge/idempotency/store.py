"""The idempotency store on the database: claim a key, complete it with the response, replay it.

The database, not Redis, is the truth for keys and sequence numbers: the stored response must
commit in the same transaction as the call's effects (gateway), so that a crash can never leave
effects without a record and let a retry execute twice. The "in flight" lock is the same row,
inserted in its own short transaction, so it holds across processes and hosts.

On the embedded database the process that owns the answer log claims gateway keys in memory
instead (local_claims.py); the rows here serve the management API and any other process.
Anti-duplicate tokens: tokens.py.
"""

import sqlite3
import time
from datetime import datetime, timedelta
from typing import Any, cast

import orjson
import structlog
from sqlalchemy import Table, delete, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncConnection

from apiforge.core.db import sqlite_file, sqlite_stamp
from apiforge.core.lazydb import SqliteReader
from apiforge.core.settings import Settings
from apiforge.idempotency.answer_log import AnswerLog
from apiforge.idempotency.claims import (
    Claim,
    KeyInUseError,
    KeyMismatchError,
    StoredResponse,
)
from apiforge.idempotency.local_claims import LocalClaims
from apiforge.idempotency.models import IdempotencyRecord
from apiforge.idempotency.sqlite_db import (
    OwnConnection,
    StoreDb,
    call_db,
    read_record,
    rowcount,
    run_committed,
)
from apiforge.idempotency.tokens import TOKENS, TokenStore
from apiforge.tools.clock import utcnow
from apiforge.tools.ids import new_id

log = structlog.get_logger(__name__)

RECORDS = cast(Table, IdempotencyRecord.__table__)
SWEEP_INTERVAL = 300.0  # seconds between sweeps of expired rows, per process
SWEEP_BATCH = 500
# After a sweep that found a full batch, the next one is due this soon: each sweep stays one
# bounded batch, but a backlog (more than 500 keys or tokens every five minutes) is caught up.
CATCH_UP_INTERVAL = 1.0


class IdempotencyStore:
    """Claims, completions and tokens; one per process, stateless apart from the sweep clock."""

    def __init__(self, settings: Settings, redis: Any = None) -> None:
        self.retention = timedelta(seconds=settings.idempotency_retention_seconds)
        self.lease = timedelta(seconds=settings.idempotency_lease_seconds)
        self._next_sweep = time.monotonic() + SWEEP_INTERVAL
        path = sqlite_file(settings.resolved_database_url)
        # Embedded SQLite: claims go through one connection of the store's own (one hop each,
        # no pool checkout: a read-only call then never needs a pooled connection at all); the
        # gateway's answers go to a log of files (answer_log.py), opened on first use, and the
        # process that owns it claims gateway keys in memory (local_claims.py).
        self.own_db: OwnConnection | None = None
        self.local: LocalClaims | None = None
        if path is not None:
            self.own_db = OwnConnection(path)
            retention = settings.idempotency_retention_seconds
            answers = AnswerLog.beside(path, retention_seconds=retention)
            self.local = LocalClaims(answers, self.own_db)
        # Anti-duplicate tokens: Redis when configured, else the database (tokens.py).
        ttl = settings.idempotency_token_ttl_seconds
        self.tokens = TokenStore(ttl, redis, settings.redis_prefix, self.own_db)

    @property
    def log(self) -> AnswerLog | None:
        """The embedded database's answer log (not opened until a keyed call needs it)."""
        return self.local.log if self.local is not None else None

    async def close(self) -> None:
        if self.local is not None and self.local.opened:
            await self.local.log.close()
        if self.own_db is not None:
            await self.own_db.close()

    async def claim_gateway(
        self,
        conn: AsyncConnection,
        reader: SqliteReader | None,
        record_id: str,
        fingerprint: str,
        owner: str | None = None,
    ) -> Claim | StoredResponse:
        """A gateway call's claim: in memory when this process owns the embedded database's
        answer log (local_claims.py), else a claim row (`claim`, owned by `owner`)."""
        local = self.local
        if local is not None and reader is not None and (await local.open_log()).owner:
            return await local.claim(reader, record_id, fingerprint)
        return await self.claim(conn, record_id, fingerprint, owner)

    async def claim(
        self, conn: AsyncConnection, record_id: str, fingerprint: str, owner: str | None = None
    ) -> Claim | StoredResponse:
        """Own `record_id`, or get the response stored for it. Commits its own short transaction.

        422 when the key was used with another payload, 409 while its first request runs. A dead
        row (lease or retention over) is taken over by a conditional UPDATE, so of two racing
        takers exactly one wins. On the embedded database an answer in the answer log counts
        as well: it is looked for once the claim row is committed, so an answer committed
        before the row is found here, and one committing after it finds the row (`AnswerLog`).
        `owner`, when the caller minted it, lets the caller release a claim whose commit it
        never saw return (`release` deletes nothing of a claim never made).
        """
        local = self.local
        if local is not None:
            local.check_inflight(record_id, fingerprint)
            local.known.add(record_id)  # before a row of it can be written
        owner = owner or new_id()
        if self.own_db is not None:
            log = await local.open_log() if local is not None else None
            db = await self.own_db.get()
            fast = await self._claim_sqlite(db, record_id, fingerprint, owner)
            if isinstance(fast, Claim) and log is not None:
                return await self._unless_logged(db, log, fast, fingerprint)
            if fast is not None:
                return fast
        for _ in range(3):
            now = utcnow()
            inserted = await conn.execute(
                _insert_ignoring_conflict(conn).values(
                    id=record_id,
                    fingerprint=fingerprint,
                    owner=owner,
                    created_at=now,
                    expires_at=now + self.lease,
                )
            )
            if inserted.rowcount == 1:
                await self._maybe_sweep(conn, now)
                await conn.commit()
                return Claim(record_id, owner)
            row = (
                await conn.execute(
                    select(
                        RECORDS.c.fingerprint,
                        RECORDS.c.owner,
                        RECORDS.c.status,
                        RECORDS.c.headers,
                        RECORDS.c.body,
                        RECORDS.c.expires_at,
                    ).where(RECORDS.c.id == record_id)
                )
            ).first()
            if row is None:  # released between our INSERT and SELECT: try again
                await conn.commit()
                continue
            if row.expires_at <= now:
                taken = await conn.execute(
                    update(RECORDS)
                    .where(
                        RECORDS.c.id == record_id,
                        RECORDS.c.owner == row.owner,
                        RECORDS.c.expires_at <= now,
                    )
                    .values(
                        fingerprint=fingerprint,
                        owner=owner,
                        status=None,
                        headers=None,
                        body=None,
                        created_at=now,
                        expires_at=now + self.lease,
                    )
                )
                await conn.commit()
                if taken.rowcount == 1:
                    return Claim(record_id, owner)
                continue
            await conn.commit()
            if row.fingerprint != fingerprint:
                raise KeyMismatchError(row.fingerprint)
            if row.status is None:
                raise KeyInUseError()
            return StoredResponse(row.status, dict(row.headers or {}), bytes(row.body or b""))
        raise KeyInUseError()  # three lost races in a row: the key is busy

    async def _unless_logged(
        self, db: StoreDb, log: AnswerLog, claim: Claim, fingerprint: str
    ) -> Claim | StoredResponse:
        """A claim row was just committed: an answer the log holds for the key wins (the row is
        released); else the claim stands, and the log's owner, finding the row, will refuse a
        gateway answer of the key from now on."""
        found = await db.run(lambda: log.find(claim.id, db.raw))
        if found is None or not found.live():
            return claim
        assert self.local is not None  # the log is the local claims'
        try:
            return await self.local.replayed(found, fingerprint)
        finally:
            await self.release(None, claim)

    # --- claims through the database ------------------------------------------------------------

    async def complete(self, conn: AsyncConnection, claim: Claim, response: StoredResponse) -> None:
        """Store the response on the claimed row, in the caller's transaction (not committed
        here). 409 when the claim was lost (its lease ran out and another request took it): the
        caller must roll back, so only one request's effects ever commit."""
        db = await call_db(conn)
        if db is not None:
            if not conn.in_transaction():
                # So that the caller's commit reaches the driver (SQLAlchemy commits only a
                # transaction it knows of); on SQLite this sends nothing.
                await conn.begin()
            if await self._complete_sqlite(db, claim, response) != 1:
                raise KeyInUseError()
            return
        done = await conn.execute(
            update(RECORDS)
            .where(RECORDS.c.id == claim.id, RECORDS.c.owner == claim.owner)
            .values(
                status=response.status,
                headers=response.headers,
                body=response.body,
                expires_at=utcnow() + self.retention,
            )
        )
        if done.rowcount != 1:
            raise KeyInUseError()

    async def _claim_sqlite(
        self, db: StoreDb, record_id: str, fingerprint: str, owner: str
    ) -> Claim | StoredResponse | None:
        """The claim in one hop to aiosqlite's thread, on the driver's connection: the same
        statements as the portable path, without SQLAlchemy's per-statement cost (~150 us each
        on the gateway's budget). None when the connection is inside a write transaction of
        someone else's (its work must not be committed here): the portable path decides."""
        sweep = self._sweep_due()
        lease, retention = self.lease, self.retention
        backlog: list[bool] = []  # set on the connection's thread when a sweep found a full batch

        def claim() -> Claim | StoredResponse | KeyMismatchError | str | None:
            sql = db.raw
            if sql.in_transaction:
                return None
            for _ in range(3):
                now = utcnow()
                stamp = _stamp(now)
                try:
                    # Read first: a replay or a duplicate then opens no write transaction.
                    row = read_record(record_id, sql)
                    if row is None:
                        inserted = sql.execute(
                            _SQLITE_CLAIM,
                            (record_id, fingerprint, owner, stamp, _stamp(now + lease)),
                        )
                        if inserted.rowcount == 1 and sweep:
                            horizon = _stamp(now - lease - retention)
                            backlog.append(_sweep_sqlite(sql, horizon, stamp))
                        sql.commit()
                        if inserted.rowcount == 1:
                            return Claim(record_id, owner)
                        continue  # another process claimed it in between: read it
                    found, holder, status, headers, body, expires = row
                    if expires <= stamp:
                        taken = sql.execute(
                            _SQLITE_TAKE_OVER,
                            (
                                fingerprint,
                                owner,
                                stamp,
                                _stamp(now + lease),
                                record_id,
                                holder,
                                stamp,
                            ),
                        )
                        sql.commit()
                        if taken.rowcount == 1:
                            return Claim(record_id, owner)
                        continue
                except BaseException:
                    sql.rollback()
                    raise
                if found != fingerprint:
                    return KeyMismatchError(found)
                if status is None:
                    return "in_use"
                return StoredResponse(
                    status, orjson.loads(headers) if headers else {}, bytes(body or b"")
                )
            return "in_use"

        outcome = await db.run(claim)
        if any(backlog):
            self._sweep_again_soon()
        if isinstance(outcome, KeyMismatchError):
            raise outcome
        if outcome == "in_use":
            raise KeyInUseError()
        assert outcome is None or isinstance(outcome, Claim | StoredResponse)
        return outcome

    async def _complete_sqlite(
        self, db: StoreDb, claim: Claim, response: StoredResponse, *, commit: bool = False
    ) -> int:
        """The completion in one hop: inside the connection's open transaction (committed by
        its owner), or committed here (`commit`, the store's own connection). 0 when the claim
        was lost, or when the answer log holds a live answer of the key (committed by its
        owner process after this claim looked: the row's UPDATE holds the write lock first,
        so no answer can commit between the look and this transaction's commit)."""
        params = (
            response.status,
            orjson.dumps(response.headers).decode(),
            response.body,
            _stamp(utcnow() + self.retention),
            claim.id,
            claim.owner,
        )
        log = self.local.log if self.local is not None and self.local.opened else None

        def complete(sql: sqlite3.Connection) -> int:
            done = int(sql.execute(_SQLITE_COMPLETE, params).rowcount)
            if done and log is not None and _answered(log, sql, claim.id):
                return 0
            return done

        if commit:
            done: int = await run_committed(db, complete)
        else:
            done = await db.run(lambda: complete(db.raw))
        return done

    def _sweep_due(self) -> bool:
        if time.monotonic() < self._next_sweep:
            return False
        self._next_sweep = time.monotonic() + SWEEP_INTERVAL
        return True

    def _sweep_again_soon(self) -> None:
        self._next_sweep = min(self._next_sweep, time.monotonic() + CATCH_UP_INTERVAL)

    async def complete_now(
        self, conn: AsyncConnection | None, claim: Claim, response: StoredResponse
    ) -> None:
        """Store the response in a transaction of its own, committed here: for work that
        committed already (the management API) or wrote nothing (a gateway call whose steps
        only read). On SQLite that is one hop on the store's own connection; else `conn`."""
        if self.own_db is not None:
            db = await self.own_db.get()
            if await self._complete_sqlite(db, claim, response, commit=True) != 1:
                raise KeyInUseError()
            return
        assert conn is not None
        await self.complete(conn, claim, response)
        await conn.commit()

    async def renew(self, conn: AsyncConnection | None, claim: Claim) -> bool:
        """Extend an unfinished claim's lease by a whole lease from now, committed here (on
        SQLite on the store's own connection; else on `conn`). False when the claim is no longer
        this request's (its lease ran out and another request took the key over)."""
        expires = utcnow() + self.lease
        if self.own_db is not None:
            params = (_stamp(expires), claim.id, claim.owner)
            renewed = await run_committed(await self.own_db.get(), rowcount(_SQLITE_RENEW, params))
            return bool(renewed)
        assert conn is not None
        result = await conn.execute(
            update(RECORDS)
            .where(
                RECORDS.c.id == claim.id,
                RECORDS.c.owner == claim.owner,
                RECORDS.c.status.is_(None),
            )
            .values(expires_at=expires)
        )
        await conn.commit()
        return bool(result.rowcount)

    async def release(self, conn: AsyncConnection | None, claim: Claim) -> None:
        """Forget an unfinished claim (the request failed, nothing committed): a retry runs
        afresh. Commits (on SQLite on the store's own connection; else on `conn`)."""
        if self.own_db is not None:
            params = (claim.id, claim.owner)
            await run_committed(await self.own_db.get(), rowcount(_SQLITE_RELEASE, params))
            return
        assert conn is not None
        await conn.execute(
            delete(RECORDS).where(
                RECORDS.c.id == claim.id,
                RECORDS.c.owner == claim.owner,
                RECORDS.c.status.is_(None),
            )
        )
        await conn.commit()

    async def sweep(self, conn: AsyncConnection, now: datetime | None = None) -> int:
        """Delete up to one batch of dead records and tokens (not committed here). A record
        claimed longer ago than lease + retention (its index is on `created_at`, which
        completions never rewrite) goes once its lease or retention is over too: a management
        claim renewed under a route still running, or the answer such a route stored late, is
        live until its own expiry. Younger dead ones are taken over when their key comes back,
        or swept later."""
        now = now or utcnow()
        removed = 0
        for table, column, horizon in (
            (RECORDS, RECORDS.c.created_at, now - self.retention - self.lease),
            (TOKENS, TOKENS.c.expires_at, now),
        ):
            # SKIP LOCKED (PostgreSQL): another process sweeping at once takes other rows
            # instead of waiting for its claim's transaction, or deadlocking with it.
            dead = (
                select(table.c.id)
                .where(column <= horizon, table.c.expires_at <= now)
                .limit(SWEEP_BATCH)
                .with_for_update(skip_locked=True)
            )
            result = await conn.execute(delete(table).where(table.c.id.in_(dead)))
            removed += result.rowcount
            if result.rowcount >= SWEEP_BATCH:
                self._sweep_again_soon()
        return removed

    async def sweep_if_due(self, conn: AsyncConnection) -> None:
        """The lazy purge, piggybacked on the issue of a token (its transaction, not committed
        here): tokens pile up where nothing claims keys (on the embedded database the gateway
        claims in memory)."""
        await self._maybe_sweep(conn, utcnow())

    async def _maybe_sweep(self, conn: AsyncConnection, now: datetime) -> None:
        """Lazy purge: at most every few minutes per process (every second while a backlog
        lasts), piggybacked on a claim's transaction, so expired rows never pile up and no
        separate worker is needed."""
        if not self._sweep_due():
            return
        removed = await self.sweep(conn, now)
        if removed:
            log.info("idempotency_swept", removed=removed)


# SQLite's storage of `UTCDateTime` (naive UTC text, SQLAlchemy's format): compares as text.
_SQLITE_CLAIM = (
    "INSERT INTO idempotency_records (id, fingerprint, owner, created_at, expires_at) "
    "VALUES (?, ?, ?, ?, ?) ON CONFLICT (id) DO NOTHING"
)
_SQLITE_TAKE_OVER = (
    "UPDATE idempotency_records SET fingerprint = ?, owner = ?, status = NULL, headers = NULL, "
    "body = NULL, created_at = ?, expires_at = ? WHERE id = ? AND owner = ? AND expires_at <= ?"
)
_SQLITE_COMPLETE = (
    "UPDATE idempotency_records SET status = ?, headers = ?, body = ?, expires_at = ? "
    "WHERE id = ? AND owner = ?"
)
_SQLITE_RENEW = (
    "UPDATE idempotency_records SET expires_at = ? WHERE id = ? AND owner = ? AND status IS NULL"
)
_SQLITE_RELEASE = "DELETE FROM idempotency_records WHERE id = ? AND owner = ? AND status IS NULL"
_SQLITE_SWEEP = (
    "DELETE FROM {table} WHERE id IN "  # our two table names only
    "(SELECT id FROM {table} WHERE {column} <= ? AND expires_at <= ? LIMIT {batch})"
)


def _answered(log: AnswerLog, db: sqlite3.Connection, record_id: str) -> bool:
    """Whether the answer log holds a live answer of `record_id` (read on `db`'s thread)."""
    found = log.find(record_id, db)
    return found is not None and found.live()


_stamp = sqlite_stamp


def _sweep_sqlite(sql: sqlite3.Connection, records_horizon: str, stamp: str) -> bool:
    """`sweep`'s statements, run in the claim's transaction on the store's connection; True
    when a table had a full batch of dead rows (more may wait)."""
    removed, backlog = 0, False
    for table, column, horizon in (
        ("idempotency_records", "created_at", records_horizon),
        ("idempotency_tokens", "expires_at", stamp),
    ):
        statement = _SQLITE_SWEEP.format(table=table, column=column, batch=SWEEP_BATCH)
        count = sql.execute(statement, (horizon, stamp)).rowcount
        removed += count
        backlog = backlog or count >= SWEEP_BATCH
    if removed:
        log.info("idempotency_swept", removed=removed)
    return backlog


STORE_KEY = "idempotency_store"


def shared_store(holder: dict[str, Any], settings: Settings, redis: Any) -> IdempotencyStore:
    """The process's store, kept in `holder` (the gateway state's `extra`): the gateway and the
    management API share it, and with it the embedded database's store connection."""
    store = holder.get(STORE_KEY)
    if not isinstance(store, IdempotencyStore):
        store = IdempotencyStore(settings, redis)
        holder[STORE_KEY] = store
    return store


async def close_shared_store(holder: dict[str, Any]) -> None:
    """On shutdown: close the store's own database connection, if it opened one."""
    store = holder.pop(STORE_KEY, None)
    if isinstance(store, IdempotencyStore):
        await store.close()


def _insert_ignoring_conflict(conn: AsyncConnection) -> Any:
    if conn.dialect.name == "postgresql":
        return pg_insert(RECORDS).on_conflict_do_nothing(index_elements=["id"])
    return sqlite_insert(RECORDS).on_conflict_do_nothing(index_elements=["id"])
