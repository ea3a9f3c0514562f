"""The gateway's claims of idempotency keys on the embedded database, held in this process's
memory.

The process that owns the answer log (answer_log.py; one process serves the embedded database,
as charging assumes, billing/charging.py) claims a gateway key here, with no claim row committed
before the call: the answer is written once, to the log, by the transaction that commits the
call's effects (`answer`, carried by the call's charge) or by `complete`. A crash loses only
claims whose calls had committed nothing, so a retry runs afresh. A fresh key reads nothing: a
filter of the ids that may have an answer (known.py) says so, and only a key it may hold is
looked up — in the log, then among the rows of the portable path (the management API's, or
another process's; store.py).
"""

import asyncio
import sqlite3
from functools import partial

import orjson
import structlog
from sqlalchemy.ext.asyncio import AsyncConnection

from apiforge.core.db import sqlite_stamp
from apiforge.core.lazydb import SqliteReader
from apiforge.idempotency.answer_log import Answer, AnswerLog, AnswersRefused
from apiforge.idempotency.claims import (
    AnswerLostError,
    Claim,
    KeyInUseError,
    KeyMismatchError,
    StoredResponse,
)
from apiforge.idempotency.known import KnownKeys
from apiforge.idempotency.segments import Found
from apiforge.idempotency.sqlite_db import OwnConnection, call_db, read_record
from apiforge.tools.clock import utcnow
from apiforge.tools.ids import new_id

log = structlog.get_logger(__name__)


class LocalClaims:
    def __init__(self, log: AnswerLog, own_db: OwnConnection) -> None:
        self.log = log
        self.own_db = own_db
        # The ids that may have an answer, so a fresh key's claim reads nothing.
        self.known = KnownKeys()
        # The claims in flight in this process, by record id.
        self.inflight: dict[str, Claim] = {}
        self.owner = new_id()  # the owner its claims name: this process
        self.opened = False
        self._opening = asyncio.Lock()

    async def open_log(self) -> AnswerLog:
        """The answer log, opened (and recovered) on first use."""
        if not self.opened:
            async with self._opening:
                if not self.opened:
                    await self.log.open()
                    self.opened = True
                    if not self.log.owner:
                        # Another process serves the same file: its claims are in its memory,
                        # so a key sent to both may run its outside steps in each (its writes
                        # and charge stay single). Said once, where an operator looks.
                        log.warning("answer_log_owned_elsewhere", directory=str(self.log.directory))
        return self.log

    def fresh(self, record_id: str, fingerprint: str) -> Claim | None:
        """The common case of `claim`, without awaiting: a key this process never saw is
        claimed here and now. None: anything else (not the log's owner, a key in flight, one the
        filter of known ids may hold); `claim` decides."""
        if (
            not self.opened
            or not self.log.owner
            or record_id in self.inflight
            or self.known.add(record_id)  # "maybe held": added all the same, then looked up
        ):
            return None
        claim = Claim(record_id, self.owner, local=True, fingerprint=fingerprint)
        self.inflight[record_id] = claim
        return claim

    async def claim(
        self, reader: SqliteReader, record_id: str, fingerprint: str
    ) -> Claim | StoredResponse:
        """Claim `record_id` in memory, or get the answer stored for it (422 with another
        payload, 409 while a claim of it is in flight, here or through a row)."""
        self.check_inflight(record_id, fingerprint)
        known, log = self.known, self.log
        if known.add(record_id):  # else certainly nothing stored: a fresh key reads nothing
            known.load_soon(reader.path, self.inflight.keys(), log.known_ids)
            found = log.find(record_id)
            if found is not None and found.live():
                return await self.replayed(found, fingerprint)
            row = reader.peek(partial(read_record, record_id))  # a point lookup: no hop
            if row is not None:
                stored, _, status, headers, body, expires = row
                if expires > sqlite_stamp(utcnow()):
                    if stored != fingerprint:
                        raise KeyMismatchError(stored)
                    if status is None:  # claimed through the database (the portable path)
                        raise KeyInUseError()
                    return StoredResponse(
                        status, orjson.loads(headers) if headers else {}, bytes(body or b"")
                    )
        claim = Claim(record_id, self.owner, local=True, fingerprint=fingerprint)
        self.inflight[record_id] = claim
        return claim

    async def replayed(self, found: Found, fingerprint: str) -> StoredResponse:
        """The answer the log holds for a key, for a request with `fingerprint`."""
        if found.lost:
            raise AnswerLostError()
        stored = await asyncio.to_thread(self.log.read, found)
        if stored is None:  # damaged on the disk since it was written: as good as lost
            raise AnswerLostError()
        if stored.fingerprint != fingerprint:
            raise KeyMismatchError(stored.fingerprint)
        return StoredResponse(stored.status, stored.headers, stored.body)

    def check_inflight(self, record_id: str, fingerprint: str) -> None:
        """422 or 409 when a claim of `record_id` is in flight in this process."""
        held = self.inflight.get(record_id)
        if held is not None:
            if held.fingerprint != fingerprint:
                raise KeyMismatchError(held.fingerprint)
            raise KeyInUseError()

    def answer(self, claim: Claim, response: StoredResponse, *, marked: bool = True) -> Answer:
        """A claim's answer, to be written by the transaction of the call's effects
        (`AnswerLog.write`, which a charge carries in `Charge.rows`) or by `complete`."""
        answer = Answer(
            claim.id, claim.fingerprint, response.status, response.headers, response.body, marked
        )
        claim.answer = answer
        return answer

    async def complete(self, conn: AsyncConnection, claim: Claim, response: StoredResponse) -> None:
        """Store a claim's answer when no charge carries it: in the call's transaction if the
        call used its connection (committed with its effects), else at once from the store's
        connection (the call committed nothing: nothing to be atomic with). 409 if another
        process holds the key: the caller must roll back."""
        log = self.log
        own = await call_db(conn) if getattr(conn, "started", True) else None
        if own is not None:
            answer = self.answer(claim, response)
            if not conn.in_transaction():
                await conn.begin()  # so the caller's commit reaches the driver
            target = own
        else:
            answer = self.answer(claim, response, marked=False)
            target = await self.own_db.get()
        if not await target.run(lambda: _written_now(log, target.raw, answer)):
            raise KeyInUseError()

    def settle(self, claim: Claim, committed: bool | None) -> None:
        """The call is over: its answer committed (from now on found in the log), nothing of
        the call did, or — None, a cancelled call — it is not known (`AnswerLog.abandon`)."""
        answer = claim.answer
        if answer is not None:
            claim.answer = None
            if committed is None:
                committed = self.log.abandon(answer)
            if committed:
                self.log.confirm(answer)
            else:
                self.log.forget(answer)
        if self.inflight.get(claim.id) is claim:
            del self.inflight[claim.id]


def _written_now(log: AnswerLog, db: sqlite3.Connection, answer: Answer) -> bool:
    """`answer` staged on this thread and written at once (its transaction, if any, commits
    later, by its owner); False when another process holds the key."""
    if not log.write(db, answer):
        return False
    try:
        log.before_commit(db)
    except AnswersRefused:
        return False
    return True
