"""Stage: idempotency keys, sequence numbers and anti-duplicate tokens (DESIGN.md §4 stage 6,
run after validation and permissions: see pipeline.py).

With none of the three headers the stage costs three dict lookups. With one, it costs one short
transaction before the run (claim the key, or spend the token) and one UPDATE inside the run's own
transaction (store the response), so the stored response commits atomically with the call's
effects: a crash can never leave effects without a record, and a retry never executes twice. On
the embedded database the process that owns the answer log (idempotency/answer_log.py) claims a
key in memory, reading nothing for a key it has never seen, and its answer is appended to the
log by the transaction of the call's charge or effects (idempotency/local_claims.py).
A key belongs to the credential in the calling workspace and, when the call carries an end-user
token, to that end user: a replay is only ever an answer to the same caller, checked afresh.
Refusals before this stage (auth, policy, limits, validation, permissions) never reach the
store; refusals after it (quotas, balance, failed steps) roll back and release the claim, so
only completed calls are replayed.
"""

import asyncio
from functools import partial

import structlog

from apiforge.core.errors import ValidationError
from apiforge.gateway.context import CANCELLED, GatewayContext
from apiforge.gateway.stage import Answered, GatewayState
from apiforge.http.metrics import IDEMPOTENT_REPLAYS
from apiforge.idempotency.claims import Claim, KeyInUseError, KeyMismatchError, StoredResponse
from apiforge.idempotency.keys import (
    KEY_HEADER,
    REPLAYED_HEADER,
    SEQ_HEADER,
    TOKEN_HEADER,
    end_user_scope,
    fingerprint,
    fingerprint_key,
    legacy_fingerprint,
    parse_key,
    parse_seq,
    principal,
    record_id,
    token_id,
)
from apiforge.idempotency.sealed import open_answer, seal_answer
from apiforge.idempotency.store import IdempotencyStore, shared_store
from apiforge.idempotency.tokens import DuplicateRequestError
from apiforge.tools.ids import new_id

log = structlog.get_logger(__name__)

# Response headers that belong to the answer itself and are replayed with it; per-request ones
# (request id, CORS, rate-limit counters) are produced afresh on every request.
KEPT_HEADERS = ("deprecation", "sunset", "link")


def idempotency_store(state: GatewayState) -> IdempotencyStore:
    """The process's store, shared by the stage, its after-stage and the management API."""
    return shared_store(state.extra, state.settings, state.redis)


class IdempotencyStage:
    name = "idempotency"

    def __init__(self, state: GatewayState) -> None:
        self.store = idempotency_store(state)
        self.secret = state.settings.signing_key  # seals answers that may carry secrets
        self.keyed = fingerprint_key(self.secret)  # payload fingerprints (keys.fingerprint)
        # Embedded SQLite: claims in this process's memory, read through the shared reader.
        self.reader = state.reader
        self.local = self.store.local if self.reader is not None else None

    async def on_request(self, ctx: GatewayContext) -> None:
        headers = ctx.headers
        raw_key = headers.get(KEY_HEADER)
        raw_seq = headers.get(SEQ_HEADER)
        raw_token = headers.get(TOKEN_HEADER)
        if raw_key is None and raw_seq is None:
            assert ctx.compiled is not None
            if ctx.compiled.auth.get("requireIdempotencyKey"):
                raise ValidationError(
                    "This API requires an Idempotency-Key header",
                    errors=[{"field": "Idempotency-Key", "message": "is required"}],
                    reason="idempotency_key_required",
                )
            if raw_token is None:
                return
        assert ctx.caller is not None
        assert ctx.connection is not None
        who = principal(ctx.caller.key_id, ctx.caller.account_id)
        assert who is not None  # every authenticated caller has a key or an account
        # Tokens are issued to the credential (the token endpoint sees no end user): spent by it.
        credential = who
        if ctx.token is not None:
            # A browser key is shared by the app's end users: each has keys of its own.
            who = end_user_scope(who, ctx.target.id if ctx.target else "", ctx.token)
        if raw_key is not None and raw_seq is not None:
            raise ValidationError(
                "Send Idempotency-Key or X-Request-Seq, not both",
                errors=[{"field": "X-Request-Seq", "message": "conflicts with Idempotency-Key"}],
                reason="idempotency_headers_conflict",
            )
        if raw_key is not None:
            # An idempotency key belongs to the caller in the calling workspace.
            rid = record_id("key", f"{ctx.caller.workspace_id}|{who}", parse_key(raw_key))
        elif raw_seq is not None:
            # A sequence number belongs to the credential that numbers its requests.
            rid = record_id("seq", who, parse_seq(raw_seq))
        else:
            rid = ""
        if rid:
            print_ = fingerprint(self.keyed, ctx.method, ctx.path, ctx.query_string, ctx.raw_body)
            outcome: Claim | StoredResponse | None = None
            if self.local is not None:  # a fresh key, claimed in memory without awaiting
                outcome = self.local.fresh(rid, print_)
            if outcome is None:
                outcome = await self._claim(ctx, rid, print_)
            if isinstance(outcome, StoredResponse):
                # A replay answers before the token is looked at: a retry that carries the same
                # token and key gets the first answer, not `duplicate_request`.
                body = open_answer(self.secret, outcome.body)
                IDEMPOTENT_REPLAYS.labels("gateway").inc()
                ctx.status, ctx.body, ctx.reason = outcome.status, body, "idempotent_replay"
                ctx.response_headers.update(outcome.headers)
                ctx.response_headers[REPLAYED_HEADER] = "1"
                raise Answered()
            ctx.idempotency = outcome
            ctx.settle.append(self._complete)
        if raw_token is not None:
            digest = token_id(raw_token)
            if digest is None:
                raise DuplicateRequestError()
            await self.store.tokens.consume(ctx.connection, digest, credential)

    async def _claim(self, ctx: GatewayContext, rid: str, print_: str) -> Claim | StoredResponse:
        """The store's claim. Its owner is on `ctx` while the claim commits: a call cancelled
        meanwhile (its client gone) has its row released after it, which would otherwise answer
        the key's retries 409 until its lease ran out (a claim never made deletes nothing)."""
        owner = new_id()
        ctx.idempotency = Claim(rid, owner)
        try:
            outcome = await self._claimed(ctx, rid, print_, owner)
        except asyncio.CancelledError:
            raise
        except Exception:
            ctx.idempotency = None
            raise
        ctx.idempotency = None  # `on_request` keeps what the claim answered
        return outcome

    async def _claimed(
        self, ctx: GatewayContext, rid: str, print_: str, owner: str
    ) -> Claim | StoredResponse:
        """A record stored before fingerprints were keyed (within the retention at the upgrade)
        holds the earlier, unkeyed form: the same request in that form is its retry, not another
        payload (computed only on a mismatch)."""
        assert ctx.connection is not None
        try:
            return await self.store.claim_gateway(ctx.connection, self.reader, rid, print_, owner)
        except KeyMismatchError as exc:
            body = (ctx.raw_body,)
            legacy = legacy_fingerprint(ctx.method, ctx.path, ctx.query_string, body)
            if not exc.stored or exc.stored != legacy:
                raise
            return await self.store.claim_gateway(ctx.connection, self.reader, rid, legacy, owner)

    async def _complete(self, ctx: GatewayContext) -> None:
        """Inside the run's transaction, after the steps: the response commits with them."""
        assert isinstance(ctx.idempotency, Claim)
        assert ctx.connection is not None
        kept = {k: v for k, v in ctx.response_headers.items() if k.lower() in KEPT_HEADERS}
        assert ctx.compiled is not None
        body = seal_answer(self.secret, ctx.body) if ctx.compiled.sealed_answers else ctx.body
        response = StoredResponse(ctx.status, kept, body)
        claim = ctx.idempotency
        if claim.local:
            local = self.store.local
            assert local is not None
            if ctx.charge is not None:
                # The charge settles next: the answer commits with its rows and the call's.
                answer = local.answer(claim, response)
                ctx.charge.rows.append(partial(local.log.write, answer=answer))
                ctx.charge.refused = KeyInUseError
            else:
                await local.complete(ctx.connection, claim, response)
            return
        started = getattr(ctx.connection, "started", True)
        if self.store.own_db is not None and ctx.charge is None and not started:
            # SQLite, the steps wrote nothing (reads went through the shared reader) and the
            # call is free: nothing to be atomic with, so no pooled connection is checked out
            # just for this. (A charge must commit with the answer: were it refused, a stored
            # answer would be replayed for nothing.)
            await self.store.complete_now(None, claim, response)
        else:
            # Within the call's transaction, committed with its effects and its charge (on
            # PostgreSQL even when an HTTP step gave the connection back: it is taken again).
            await self.store.complete(ctx.connection, claim, response)


class IdempotencyReleaseStage:
    """After-stage: a call that claimed a key but did not complete frees it for a retry."""

    name = "idempotency_release"

    def __init__(self, state: GatewayState) -> None:
        self.db = state.db
        self.store = idempotency_store(state)

    async def after(self, ctx: GatewayContext) -> None:
        claim = ctx.idempotency
        if claim is not None and claim.local:
            # A call that succeeded committed its answer; a failed one committed nothing; of a
            # cancelled one the answer's writer decides.
            assert self.store.local is not None
            self.store.local.settle(claim, None if ctx.status == CANCELLED else ctx.status < 300)
            return
        if claim is None or ctx.status < 300:
            return
        try:
            if self.store.own_db is not None:
                await self.store.release(None, claim)
                return
            async with self.db.connect() as conn:
                # Conditional on "still unfinished": a completion that committed is kept.
                await self.store.release(conn, claim)
        except Exception:  # must not raise; the claim's lease frees the key later
            log.exception("idempotency_release_failed", request_id=ctx.request_id)
