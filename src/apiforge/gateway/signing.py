"""HMAC-signed gateway calls: `X-App-Id`, `X-Timestamp`, `X-Nonce`, `X-Sign` (docs/signing.md).

`X-App-Id` is the id of an `app-` (or `ws-`) key, as key lists show it; the secret itself never
travels. The signature is HMAC-SHA256, keyed with that key's secret, over six lines: the method, the
path, the sorted query, the body's SHA-256, the timestamp and the nonce. A call is accepted when
its timestamp is within ±300 s of the server clock, its signature matches (constant-time), and its
nonce has not been seen for that key in the last `NONCE_TTL_SECONDS` (662 s). The nonce is
claimed only after the signature checked out, so anonymous traffic can never fill the nonce store
or burn a client's nonces. Across nodes the store is Redis (a `SET NX EX` in a script that
also counts the key's nonces); one process keeps an
in-memory TTL set, saved to the data dir at a graceful shutdown and read back at the next start
(`NONCE_FILE`). After a stop that saved nothing, calls timestamped at or before the second the
process started are refused: a previous process may have accepted them (docs/signing.md). That
set holds at most `MAX_NONCES`, `MAX_NONCES_PER_KEY` of one key (Redis: about as many of one
key): a nonce is claimed before any limit of traffic control (or a 404 for an unknown app) could
shed the call, so without a cap one key signing as fast as the server answers would grow it for
as long as a nonce lives.
"""

import fcntl
import hashlib
import hmac
import json
import math
import os
import re
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import quote, unquote_plus

import structlog
from prometheus_client import Counter
from redis.asyncio import Redis
from redis.exceptions import RedisError

from apiforge.core.errors import AuthenticationError, RateLimitedError, UnavailableError
from apiforge.gateway.context import Caller, GatewayContext
from apiforge.gateway.keys import SIGNING_KINDS, key_caller, key_lookup
from apiforge.gateway.stage import GatewayState
from apiforge.http.metrics import LIMIT_REJECTIONS
from apiforge.keys.policy import KeyRecord
from apiforge.tools.clock import CLOCK_SKEW_SECONDS
from apiforge.traffic.frequency import retry_seconds, wait_ms

SKEW_SECONDS = 300
# A nonce must be remembered at least as long as a timestamp that carries it can be accepted:
# while the server's whole second is within 300 s of it, i.e. for 601 s of real time (from
# T-300 to just before T+301); a second more for the stores' whole-second expiries; and, with
# several nodes, as much again as their clocks may differ (a node behind the one that first
# accepted the nonce still accepts its timestamp later, in real time).
NONCE_TTL_SECONDS = 2 * SKEW_SECONDS + 2 + CLOCK_SKEW_SECONDS
# One process's live nonces (~250 bytes each): about 1,500 signed calls a second sustained, 375 of
# one key. A new nonce beyond either is refused, never an old one forgotten (a replay).
MAX_NONCES = 1_000_000
MAX_NONCES_PER_KEY = MAX_NONCES // 4
# Whole-value matches (`fullmatch`): `$` alone would also accept a value ending in a newline.
NONCE_PATTERN = re.compile(r"[A-Za-z0-9_-]{16,64}")
TIMESTAMP_PATTERN = re.compile(r"[0-9]{1,12}")
SIGN_PATTERN = re.compile(r"[0-9a-fA-F]{64}")
KEY_ID_MAX = 128
HEADERS = ("x-app-id", "x-timestamp", "x-nonce", "x-sign")
# In the data dir: the live nonces of the processes that stopped gracefully (each adds its own),
# removed at start by the first to read it.
NONCE_FILE = "signing-nonces.json"
NONCES_KEY = "signing_nonces"  # the process's in-memory store, in `GatewayState.extra`

log = structlog.get_logger(__name__)

DEGRADED = Counter(
    "apiforge_gateway_degraded_total",
    "Gateway calls a shared store could not serve (the call was refused: fail closed)",
    ["store"],
)


# --- the canonical string -----------------------------------------------------------------


def canonical_query(query_string: str) -> str:
    """The query as `name=value` pairs, decoded then re-encoded (RFC 3986: only `A-Za-z0-9-_.~`
    stay literal), sorted by name then value, joined with `&`; `""` without a query."""
    pairs = []
    for part in query_string.split("&"):
        if not part:
            continue
        name, _, value = part.partition("=")
        pairs.append((_encode(unquote_plus(name)), _encode(unquote_plus(value))))
    return "&".join(f"{name}={value}" for name, value in sorted(pairs))


def _encode(text: str) -> str:
    return quote(text, safe="-_.~")


def canonical_string(
    method: str, path: str, query_string: str, body: bytes, timestamp: str, nonce: str
) -> str:
    """The six lines a signature covers, joined by `\\n` (no trailing newline)."""
    return "\n".join(
        (
            method.upper(),
            path,
            canonical_query(query_string),
            hashlib.sha256(body).hexdigest(),
            timestamp,
            nonce,
        )
    )


def sign(secret: str, canonical: str) -> str:
    """`X-Sign`: lower-case hex HMAC-SHA256 of the canonical string, keyed with the secret."""
    return hmac.new(secret.encode(), canonical.encode(), hashlib.sha256).hexdigest()


def signature_matches(secret: str, canonical: str, given: str) -> bool:
    """Constant-time comparison, so timing never reveals how much of a guess was right."""
    return hmac.compare_digest(sign(secret, canonical).encode(), given.lower().encode())


def check_timestamp(timestamp: str, now: float) -> None:
    """401 unless `timestamp` is whole Unix seconds within ±300 s of `now`."""
    if not TIMESTAMP_PATTERN.fullmatch(timestamp):
        raise AuthenticationError(
            "X-Timestamp must be whole Unix seconds", reason="invalid_timestamp"
        )
    if abs(int(timestamp) - int(now)) > SKEW_SECONDS:
        raise AuthenticationError(
            f"X-Timestamp is more than {SKEW_SECONDS} seconds from the server clock",
            reason="timestamp_skewed",
            details={"serverTime": int(now)},
        )


# --- nonce stores -------------------------------------------------------------------------


class NonceStore(Protocol):
    # Unix seconds: a call timestamped at or before it is refused (0: none). Set only by an
    # in-memory store that started without its predecessor's nonces (`MemoryNonceStore.restore`).
    not_before: int

    async def claim(self, key: str, ttl_seconds: int) -> bool:
        """True the first time `key` (`<key id>:<nonce>`) is claimed within `ttl_seconds`, False
        after that. Raises `UnavailableError` when the store cannot answer (callers fail closed),
        `RateLimitedError` when the key holds as many live nonces as a process keeps of one."""
        ...


class MemoryNonceStore:
    """One process's nonces. Every entry lives for the same TTL, so insertion order is expiry
    order and pruning only ever looks at the oldest entries.

    A restart would forget them, and a call captured in the minutes before it could be replayed
    once; rather than a write per call, `save` keeps them in a file at a graceful shutdown and
    `restore` reads them back. Without that file (a first start, a killed process) `restore`
    sets `not_before` to the start: every call a previous process accepted carries an earlier
    timestamp (given clocks that agree), and after 300 s the skew check refuses those anyway.

    Full (`capacity` in all, `per_key` of one key), it refuses new nonces until old ones
    expire: forgetting a live one early would let its call be replayed."""

    def __init__(
        self,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
        *,
        capacity: int = MAX_NONCES,
        per_key: int = MAX_NONCES_PER_KEY,
    ) -> None:
        self.clock = clock
        self.wall = wall
        self.capacity = capacity
        self.per_key = per_key
        self.not_before = 0
        self._expiry: dict[str, float] = {}
        self._order: deque[tuple[float, str]] = deque()
        # key id -> the expiries of its live nonces, oldest first (the same float objects as
        # `_order`'s: a pointer per nonce), for the wait of a key past its share.
        self._held: dict[str, deque[float]] = {}

    async def claim(self, key: str, ttl_seconds: int) -> bool:
        now = self.clock()
        order, expiry = self._order, self._expiry
        while order and order[0][0] <= now:
            expires, old = order.popleft()
            if expiry.get(old) == expires:
                del expiry[old]
                self._release(old)
        if key in expiry:
            return False
        owner = _owner(key)
        if len(expiry) >= self.capacity:
            LIMIT_REJECTIONS.labels("signing_nonces", "process").inc()
            raise UnavailableError(
                "Too many signed calls to check right now; retry later",
                reason="nonce_store_full",
                headers={"Retry-After": str(self._retry_after(now))},
            )
        held = self._held.get(owner)
        if held is not None and len(held) >= self.per_key:
            LIMIT_REJECTIONS.labels("signing_nonces", "key").inc()
            raise RateLimitedError(
                "This key signed too many calls within a nonce's lifetime; retry later",
                retry_after=_seconds_until(held[0], now),  # this key's oldest, not another's
                reason="too_many_nonces",
            )
        self._add(key, owner, now + ttl_seconds)
        return True

    def _add(self, key: str, owner: str, expires: float) -> None:
        self._expiry[key] = expires
        self._order.append((expires, key))
        held = self._held.get(owner)
        if held is None:
            self._held[owner] = held = deque()
        held.append(expires)

    def _release(self, key: str) -> None:
        """Nonces expire in the order they came (one TTL), so a key's released one is its
        oldest."""
        owner = _owner(key)
        held = self._held[owner]
        held.popleft()
        if not held:
            del self._held[owner]

    def _retry_after(self, now: float) -> int:
        """Seconds until the oldest nonce expires: no room frees before."""
        return _seconds_until(self._order[0][0], now) if self._order else 1

    def __len__(self) -> int:
        return len(self._expiry)

    def save(self, path: Path) -> None:
        """Write the live nonces with their expiry in Unix seconds (a graceful shutdown), added
        to those already in the file: with `--workers` and no Redis every worker saves to it as
        it stops, and the next start must find them all. The file appears whole or not at all
        (renamed into place, under a lock): a torn or missing one only makes the next start
        refuse calls timestamped before it. One it cannot read (ValueError) is left as it is,
        for the same reason, rather than replaced by this process's nonces alone."""
        now, wall = self.clock(), self.wall()
        live = {
            key: round(wall + expires - now, 3)
            for key, expires in self._expiry.items()
            if expires > now
        }
        path.parent.mkdir(parents=True, exist_ok=True)
        with _file_lock(path):
            for key, expires in _read_nonces(path):
                if expires > wall and expires > live.get(key, 0):
                    live[key] = expires
            partial = path.with_name(f"{path.name}.{os.getpid()}.partial")
            try:
                partial.write_text(json.dumps({"nonces": list(live.items())}), encoding="utf-8")
                os.replace(partial, path)
            except OSError:
                partial.unlink(missing_ok=True)  # a full disk leaves no half file behind
                raise

    def restore(self, path: Path) -> None:
        """Take back what `save` wrote and remove the file, so that a later stop that saves
        nothing is not mistaken for a graceful one; without a usable file, set `not_before`."""
        started = self.wall()
        try:
            with _file_lock(path):
                text = path.read_text(encoding="utf-8")
                path.unlink()
            entries = _saved_nonces(text)
        except FileNotFoundError:
            self.not_before = int(started)
            return
        except (OSError, ValueError) as exc:
            log.warning("signing_nonces_unreadable", path=str(path), error=repr(exc))
            self.not_before = int(started)
            return
        now = self.clock()
        # Oldest first, as `claim` keeps them; never longer than a nonce lives (a clock set back).
        for key, expires in sorted(entries, key=lambda entry: entry[1]):
            left = min(expires - started, NONCE_TTL_SECONDS)
            if left > 0 and key not in self._expiry:
                self._add(key, _owner(key), now + left)


def _seconds_until(expires: float, now: float) -> int:
    """Whole seconds (at least 1) from `now` until `expires`, rounded up: never a retry before."""
    return max(1, math.ceil(expires - now))


def _owner(key: str) -> str:
    """The key id of a claim (`<key id>:<nonce>`; a nonce has no colon)."""
    return key.rpartition(":")[0]


@contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    """One process at a time reads and rewrites the nonce file (`--workers` stop together)."""
    with open(path.with_name(f"{path.name}.lock"), "a+b") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _read_nonces(path: Path) -> list[tuple[str, float]]:
    """What another process saved to `path` before this one; none without a file."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return []
    return _saved_nonces(text)


def _saved_nonces(text: str) -> list[tuple[str, float]]:
    """The `[key, expiry]` pairs of a nonce file; ValueError for anything else."""
    saved: Any = json.loads(text)
    entries = saved.get("nonces") if isinstance(saved, dict) else None
    if not isinstance(entries, list):
        raise ValueError("no nonce list")
    pairs = []
    for entry in entries:
        match entry:
            case [str(key), int() | float() as expires] if not isinstance(expires, bool):
                pairs.append((key, float(expires)))
            case _:
                raise ValueError("not a [key, expiry] pair")
    return pairs


# KEYS: the nonce, its key's counts (a hash: nonces claimed per fixed window of one TTL, by
# window number). ARGV: TTL seconds, the key's cap. Returns {0} for a nonce seen already, {1}
# once claimed, or {2, previous, current, elapsed ms} when the key's claims in the sliding TTL
# (weighted as traffic's frequency limits are) reach the cap: nothing is stored then. Redis's
# clock times the windows, so nodes with skewed clocks count alike.
CLAIM_NONCE_LUA = """
if redis.call('EXISTS', KEYS[1]) == 1 then
  return {0}
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local window = tonumber(ARGV[1]) * 1000
local number = math.floor(now / window)
local counts = redis.call('HMGET', KEYS[2], tostring(number - 1), tostring(number))
local previous = tonumber(counts[1]) or 0
local current = tonumber(counts[2]) or 0
local elapsed = now - number * window
if previous * (1 - elapsed / window) + current + 1 > tonumber(ARGV[2]) then
  return {2, previous, current, elapsed}
end
redis.call('SET', KEYS[1], '1', 'EX', ARGV[1])
redis.call('HINCRBY', KEYS[2], tostring(number), 1)
redis.call('HDEL', KEYS[2], tostring(number - 2))
redis.call('PEXPIRE', KEYS[2], 2 * window)
return {1}
"""


class RedisNonceStore:
    """Nonces shared by every node: one script checks and sets a nonce atomically, so of two
    nodes receiving the same signed call at once exactly one accepts it.

    Each key may hold about `per_key` live nonces, counted per key in a sliding window of one
    TTL (a small hash beside the nonces): as in process, a nonce is claimed before any limit of
    traffic control could shed the call, and without a cap one key signing as fast as the
    servers answer would grow Redis for as long as a nonce lives, starving every other
    tenant's limits and tokens once Redis is full."""

    not_before = 0  # shared and lasting: a restart of one node forgets nothing

    def __init__(self, redis: "Redis", prefix: str, *, per_key: int = MAX_NONCES_PER_KEY) -> None:
        self.redis = redis
        self.prefix = prefix
        self.per_key = per_key
        self._claim = redis.register_script(CLAIM_NONCE_LUA)

    async def claim(self, key: str, ttl_seconds: int) -> bool:
        keys = [f"{self.prefix}nonce:{key}", f"{self.prefix}nonce-count:{_owner(key)}"]
        try:
            answer = await self._claim(keys=keys, args=[ttl_seconds, self.per_key])
        except (RedisError, OSError) as exc:
            DEGRADED.labels("nonce").inc()
            raise UnavailableError(
                "Signed calls cannot be checked right now", reason="nonce_store_unavailable"
            ) from exc
        if answer[0] == 2:
            LIMIT_REJECTIONS.labels("signing_nonces", "key").inc()
            previous, current, elapsed = (int(value) for value in answer[1:])
            wait = wait_ms(self.per_key, previous, current, elapsed, ttl_seconds * 1000)
            raise RateLimitedError(
                "This key signed too many calls within a nonce's lifetime; retry later",
                retry_after=retry_seconds(wait),
                reason="too_many_nonces",
            )
        return bool(answer[0])


def nonce_store_for(state: GatewayState) -> NonceStore:
    if state.redis is not None:
        return RedisNonceStore(state.redis, state.settings.redis_prefix)
    store = MemoryNonceStore()
    store.restore(state.settings.data_dir / NONCE_FILE)
    state.extra[NONCES_KEY] = store
    return store


async def save_nonces(state: GatewayState) -> None:
    """At a graceful shutdown: the in-memory nonces to the data dir, for the next start. A
    failure is logged, not raised: the next start then refuses calls signed before it."""
    store = state.extra.pop(NONCES_KEY, None)
    if not isinstance(store, MemoryNonceStore):
        return
    path = state.settings.data_dir / NONCE_FILE
    try:
        store.save(path)
    except (OSError, ValueError) as exc:
        log.warning("signing_nonces_not_saved", path=str(path), error=repr(exc))


# --- the credential resolver --------------------------------------------------------------


class SigningKeys(Protocol):
    """Where signing keys come from (the keys domain in production, a dict in unit tests).

    Split in two so the key's own policy runs only after the signature checked out: a caller
    without the secret learns nothing about a key (revoked, expired, IP-restricted) from its id.
    """

    async def find(self, ctx: GatewayContext, key_id: str) -> tuple[KeyRecord, str] | None:
        """The key `key_id` and its secret; None for an unknown id or a key that cannot sign."""
        ...

    def admit(self, ctx: GatewayContext, record: KeyRecord) -> Caller:
        """The caller the key stands for, after its policy (revoked, expired, allowed IPs);
        raises the refusal."""
        ...


class SignatureResolver:
    """Recognises a call by its `X-Sign` header; the other three headers must come with it."""

    def __init__(
        self,
        state: GatewayState,
        *,
        keys: SigningKeys | None = None,
        nonces: NonceStore | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.state = state
        self.keys = keys if keys is not None else _LookupKeys(state)
        self.nonces = nonces if nonces is not None else nonce_store_for(state)
        self.clock = clock

    async def resolve(self, ctx: GatewayContext) -> Caller | None:
        if ctx.header("x-sign") is None:
            return None
        values = [ctx.header(name) or "" for name in HEADERS]
        missing = [name for name, value in zip(HEADERS, values, strict=True) if not value]
        if missing:
            raise AuthenticationError(
                "A signed call needs X-App-Id, X-Timestamp, X-Nonce and X-Sign",
                reason="signature_incomplete",
                details={"missing": [_title(name) for name in missing]},
            )
        key_id, timestamp, nonce, given = values
        check_timestamp(timestamp, self.clock())
        if not NONCE_PATTERN.fullmatch(nonce):
            raise AuthenticationError(
                "X-Nonce must be 16 to 64 characters of A-Z a-z 0-9 _ -", reason="invalid_nonce"
            )
        if len(key_id) > KEY_ID_MAX or not SIGN_PATTERN.fullmatch(given):
            raise _bad_signature()
        found = await self.keys.find(ctx, key_id)
        if found is None:
            raise _bad_signature()
        record, secret = found
        canonical = canonical_string(
            ctx.method, ctx.path, ctx.query_string, ctx.raw_body, timestamp, nonce
        )
        if not signature_matches(secret, canonical, given):
            raise _bad_signature()
        if int(timestamp) <= self.nonces.not_before:
            raise AuthenticationError(
                "X-Timestamp is from before the server restarted; sign the call again",
                reason="timestamp_before_restart",
            )
        if not await self.nonces.claim(f"{record.id}:{nonce}", NONCE_TTL_SECONDS):
            raise AuthenticationError(
                "This nonce was already used; sign every call with a new one",
                reason="nonce_reused",
            )
        return self.keys.admit(ctx, record)


def _bad_signature() -> AuthenticationError:
    # One answer for an unknown key and a wrong signature: key ids cannot be probed.
    return AuthenticationError("The signature does not match", reason="invalid_signature")


def _title(header: str) -> str:
    return "-".join(part.capitalize() for part in header.split("-"))


class _LookupKeys:
    """Signing keys from the process's `KeyLookup` (at most one second old): `X-App-Id` is the
    key's id; only secret keys (`app-`, `ws-`) sign, a `pk-` key is public by design. A secret
    sealed under another server secret is a 503, as an app's signing secret is: the operator
    must restore the key, and the client is not told its signature was wrong."""

    def __init__(self, state: GatewayState) -> None:
        self.lookup = key_lookup(state)

    async def find(self, ctx: GatewayContext, key_id: str) -> tuple[KeyRecord, str] | None:
        assert ctx.connection is not None
        found = await self.lookup.signing_key_for(ctx.connection, key_id)
        if found is None or found[0].kind not in SIGNING_KINDS:
            return None
        record, secret = found
        if secret is None:
            raise UnavailableError(
                "The key's secret was sealed under another server secret key",
                reason="signing_secret_unreadable",
            )
        return record, secret

    def admit(self, ctx: GatewayContext, record: KeyRecord) -> Caller:
        caller = key_caller(record, ctx)
        self.lookup.last_used.touch(record.id)
        return caller
