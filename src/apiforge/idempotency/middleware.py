"""Idempotency keys, sequence numbers and anti-duplicate tokens on the management API.

Pure ASGI, innermost: it sees the effective method (after method override) and the body the
route will see. Only `/api/v1/` writes (POST, PUT, PATCH, DELETE) other than the gateway (which
has its own stage) are considered, and only when they carry one of the three headers.

The management API commits its unit of work inside the route, so here the response is stored in
a short transaction right after the route returns — not atomically with the route's effects as
in the gateway. A process that dies between the two leaves the claim unfinished: duplicates get
409 until its lease ends, after which a retry runs again (docs/idempotency.md).

Stored answers are sealed (Fernet under a key derived from the server secret): management
answers carry secrets shown once — a new API key, an app's signing secret — which must not sit in
the database in clear for the retention period, when everything else keeps only their hashes.
For the same reason the body's fingerprint is keyed (`keys.fingerprint`): a PATCH of an app's
secret values or a user's password must not leave a hash a dump could check guesses against.
"""

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterable
from typing import Any

import structlog
from cryptography.fernet import InvalidToken
from sqlalchemy.ext.asyncio import AsyncConnection
from starlette.requests import ClientDisconnect
from starlette.routing import BaseRoute, Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from apiforge.core.errors import ApiforgeError, ValidationError
from apiforge.core.lazydb import LazyConnection
from apiforge.http.envelope import error_response
from apiforge.http.metrics import IDEMPOTENT_REPLAYS
from apiforge.idempotency.callers import CallerScope, management_caller
from apiforge.idempotency.claims import AnswerLostError, Claim, KeyMismatchError, StoredResponse
from apiforge.idempotency.keys import (
    KEY_HEADER,
    REPLAYED_HEADER,
    SEQ_HEADER,
    TOKEN_HEADER,
    fingerprint_key,
    parse_key,
    parse_seq,
    record_id,
    seq_fingerprint,
    token_id,
)
from apiforge.idempotency.spool import SpooledBody
from apiforge.idempotency.store import IdempotencyStore, shared_store
from apiforge.idempotency.tokens import DuplicateRequestError
from apiforge.tools.ids import new_id
from apiforge.tools.sealing import derived_fernet

log = structlog.get_logger(__name__)

WRITES = frozenset({"POST", "PUT", "PATCH", "DELETE"})
GATEWAY_PATH = "/api/v1/invocations"
_WATCHED = frozenset({KEY_HEADER.encode(), SEQ_HEADER.encode(), TOKEN_HEADER.encode()})
# Headers that are part of the answer; the request id, cookies and dates are made afresh.
KEPT_HEADERS = frozenset(
    {"content-type", "etag", "location", "deprecation", "sunset", "link", "cache-control"}
)
# The largest answer a write route gives is a `debug` workflow's: `data` and its trace, each
# held to the engine's 1 MiB response limit, in the envelope. A success too large to store
# releases its key, so a retry would run (and charge) it again: the cap must be above it.
MAX_STORED_BODY = 4 * 1024 * 1024
# A sealed body starts with a NUL, which no answer stored in clear (JSON, by earlier versions)
# does; the purpose keeps these ciphertexts apart from every other use of the server secret.
_SEALED = b"\x00sealed:v1:"
_PURPOSE = b"apiforge/idempotency/management-answers/v1"
# Seconds before a failed renewal is tried again, doubling while it keeps failing (`_keep_claimed`).
RENEW_RETRY_FIRST = 0.5


class IdempotencyMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] != "http"
            or scope["method"] not in WRITES
            or not scope["path"].startswith("/api/v1/")
            or scope["path"] == GATEWAY_PATH
            or not any(name in _WATCHED for name, _ in scope["headers"])
        ):
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        state = scope["app"].state
        _match_route(scope)
        try:
            await self._guarded(scope, receive, send, headers, state)
        except ApiforgeError as exc:
            response = error_response(exc.status, exc.reason, exc.message, exc.details, exc.headers)
            await response(scope, receive, send)

    async def _guarded(
        self, scope: Scope, receive: Receive, send: Send, headers: dict[str, str], state: Any
    ) -> None:
        store = self._store_of(state)
        caller = await management_caller(scope, state)
        if caller is None:  # no usable credentials: the route answers 401, nothing is stored
            await self.app(scope, receive, send)
            return
        rid = _record_id(headers, caller)
        query = scope.get("query_string", b"").decode("latin-1")
        key = fingerprint_key(state.settings.signing_key)
        with SpooledBody(key, scope["method"], scope["path"], query) as body:
            try:
                await body.read_from(receive)
            except ClientDisconnect:  # gone before its body was whole: nothing runs or is kept
                return
            seq = SEQ_HEADER in headers  # not both: `_record_id` refused that
            payload = body.fingerprint()
            if seq:
                payload = seq_fingerprint(payload, caller.workspace)
            token = headers.get(TOKEN_HEADER)
            try:
                outcome = await _admitted(state, store, rid, payload, token, caller.principal)
            except KeyMismatchError as exc:
                # Stored before fingerprints were keyed (within the retention at the upgrade):
                # the same request in the earlier form is its retry, not another payload.
                legacy = body.legacy_fingerprint()
                if seq:
                    legacy = seq_fingerprint(legacy, caller.workspace)
                if not exc.stored or exc.stored != legacy:
                    raise
                outcome = await _admitted(state, store, rid, legacy, token, caller.principal)
            if isinstance(outcome, StoredResponse):
                IDEMPOTENT_REPLAYS.labels("management").inc()
                await _replay(outcome, _opened(state, outcome.body), send)
            elif outcome is None:
                await self.app(scope, body.replaying(receive), send)
            else:
                await self._run_and_store(scope, receive, send, body, store, outcome, state)

    async def _run_and_store(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        body: SpooledBody,
        store: IdempotencyStore,
        claim: Claim,
        state: Any,
    ) -> None:
        """Run the route with its response held back, store a success, then send it: a client
        never sees a response that a retry would not get back."""
        messages: list[Message] = []

        async def hold(message: Message) -> None:
            messages.append(message)

        done = asyncio.Event()
        keeper = asyncio.create_task(_keep_claimed(state, store, claim, done))
        try:
            try:
                await self.app(scope, body.replaying(receive), hold)
            finally:
                done.set()
                await keeper  # a renewal under way ends first: none follows the release
        except BaseException:
            await _release(state, store, claim)
            raise
        start = next((m for m in messages if m["type"] == "http.response.start"), None)
        status = int(start["status"]) if start is not None else 500
        content = b"".join(
            m.get("body", b"") for m in messages if m["type"] == "http.response.body"
        )
        if 200 <= status < 300 and start is not None and len(content) <= MAX_STORED_BODY:
            kept = {
                k.decode("latin-1"): v.decode("latin-1")
                for k, v in start.get("headers", [])
                if k.decode("latin-1").lower() in KEPT_HEADERS
            }
            try:
                async with _connection(state, store) as conn:
                    sealed = StoredResponse(status, kept, _sealed(state, content))
                    await store.complete_now(conn, claim, sealed)
            except Exception:
                # The work is done; not replaying it later is the lesser harm than a 500 now.
                log.exception("idempotency_store_failed")
        else:
            await _release(state, store, claim)
        for message in messages:
            await send(message)

    @staticmethod
    def _store_of(state: Any) -> IdempotencyStore:
        return shared_store(state.gateway_state.extra, state.settings, state.redis)


def _match_route(scope: Scope) -> None:
    """Name the route in `scope` as the router will: an answer given here (a replay, a 409, a
    422) is then counted under its route template in `/metrics`, not as "unmatched"."""
    route = _matching(scope["app"].router.routes, scope)
    if route is not None:
        scope["route"] = route


def _matching(routes: Iterable[BaseRoute], scope: Scope) -> BaseRoute | None:
    for route in routes:
        # FastAPI keeps an included router whole (its `original_router`): look inside.
        inner = getattr(route, "original_router", None)
        found = _matching(inner.routes, scope) if inner is not None else None
        if found is not None:
            return found
        if inner is None and route.matches(scope)[0] is Match.FULL:
            return route
    return None


async def _admitted(
    state: Any,
    store: IdempotencyStore,
    rid: str | None,
    payload: str,
    raw_token: str | None,
    principal: str,
) -> Claim | StoredResponse | None:
    """Claim the key (or find its stored answer) and spend the token, in one short committed
    transaction: the claim, the answer to replay, or None (a token alone, spent). A token that
    can't be spent frees the claim again.

    The claim's owner is minted here: a request cancelled while its claim commits (its client
    gone) releases the row it may have committed, which would otherwise answer the key's
    retries 409 until its lease ran out (a claim never made deletes nothing)."""
    owner = new_id() if rid is not None else ""
    try:
        async with _connection(state, store) as conn:
            claim: Claim | None = None
            if rid is not None:
                outcome = await store.claim(conn, rid, payload, owner)
                if isinstance(outcome, StoredResponse):
                    return outcome
                claim = outcome
            try:
                if raw_token is not None:
                    digest = token_id(raw_token)
                    if digest is None:
                        raise DuplicateRequestError()
                    await store.tokens.consume(conn, digest, principal)
                await conn.commit()
            except BaseException:
                await conn.rollback()
                if claim is not None:
                    await store.release(conn, claim)
                raise
            return claim
    except asyncio.CancelledError:
        if rid is not None:  # after the claim's connection is closed: its commit is over
            await _release(state, store, Claim(rid, owner))
        raise


def _record_id(headers: dict[str, str], caller: CallerScope) -> str | None:
    raw_key, raw_seq = headers.get(KEY_HEADER), headers.get(SEQ_HEADER)
    if raw_key is not None and raw_seq is not None:
        raise ValidationError(
            "Send Idempotency-Key or X-Request-Seq, not both",
            errors=[{"field": "X-Request-Seq", "message": "conflicts with Idempotency-Key"}],
            reason="idempotency_headers_conflict",
        )
    if raw_key is not None:
        return record_id("key", f"{caller.workspace}|{caller.principal}", parse_key(raw_key))
    if raw_seq is not None:
        return record_id("seq", caller.principal, parse_seq(raw_seq))
    return None


async def _keep_claimed(
    state: Any, store: IdempotencyStore, claim: Claim, done: asyncio.Event
) -> None:
    """Renew the claim's lease every third of it until `done`. A management route has no time
    bound of its own (an import or a publish takes as long as the app is large; an upload as
    long as its disk), and a claim that lapsed under a route still running would let a retry
    take the key over and run the request a second time. So only a dead process's claims
    expire. A keyed write pays one task; a statement only when it runs a third of a lease.

    A renewal that fails (the database out of reach for a moment) is tried again soon, backing
    off from `RENEW_RETRY_FIRST` to a twelfth of the lease: waiting a whole third again, two
    failures in a row would let the claim lapse, while at least eight tries fit in the two
    thirds left. For the same reason a try on a pooled connection (PostgreSQL) gets a twelfth
    of the lease: one that hangs (a connect to a server gone quiet) would otherwise use up the
    rest of the lease. Cancelled midway, SQLAlchemy invalidates the connection rather than
    check it in. (On the embedded database a renewal is one hop on the store's own thread,
    which a timeout would not stop: the next try would queue behind it.)"""
    lease = store.lease.total_seconds()
    period, failures = lease / 3, 0
    bound = lease / 12 if store.own_db is None else None
    while True:
        delay = period if not failures else min(RENEW_RETRY_FIRST * 2 ** (failures - 1), lease / 12)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(done.wait(), delay)
        if done.is_set():
            return
        try:
            async with asyncio.timeout(bound), _connection(state, store) as conn:
                renewed = await store.renew(conn, claim)
        except Exception:
            failures += 1
            log.exception("idempotency_renew_failed", failures=failures)
            continue
        if not renewed:
            log.warning("idempotency_claim_lost", record=claim.id)
            return
        failures = 0


async def _release(state: Any, store: IdempotencyStore, claim: Claim) -> None:
    try:
        async with _connection(state, store) as conn:
            await store.release(conn, claim)
    except Exception:  # the lease frees the key later
        log.exception("idempotency_release_failed")


@contextlib.asynccontextmanager
async def _connection(state: Any, store: IdempotencyStore) -> AsyncIterator[AsyncConnection]:
    """The connection of a claim, a token, a renewal, a release or a completion. On the embedded
    database a `LazyConnection`: the store writes those through its own connection, so a pooled
    one is checked out only if a claim falls back to the portable path (its own connection
    found inside a transaction), never behind the routes when the pool is busy for nothing."""
    if store.own_db is None:
        async with state.engine.connect() as conn:
            yield conn
        return
    conn = LazyConnection(state.engine)
    try:
        yield conn
    finally:
        await conn.close()


def _sealed(state: Any, body: bytes) -> bytes:
    return _SEALED + derived_fernet(state.settings.signing_key, _PURPOSE).encrypt(body)


def _opened(state: Any, stored: bytes) -> bytes:
    """The answer's bytes; one sealed under a server secret since replaced can't be given back
    (409 `idempotency_answer_lost`, as for an answer lost in a crash)."""
    if not stored.startswith(_SEALED):
        return stored  # stored in clear by an earlier version, within its retention
    fernet = derived_fernet(state.settings.signing_key, _PURPOSE)
    try:
        return fernet.decrypt(stored[len(_SEALED) :])
    except InvalidToken:
        raise AnswerLostError() from None


async def _replay(stored: StoredResponse, body: bytes, send: Send) -> None:
    headers = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in stored.headers.items()]
    headers = [h for h in headers if h[0].lower() != b"content-length"]
    headers.append((b"content-length", str(len(body)).encode()))
    headers.append((REPLAYED_HEADER.encode(), b"1"))
    await send({"type": "http.response.start", "status": stored.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
