"""HMAC signing: the canonical string, the verification order, and the nonce stores (one shared
conformance test for the in-memory and the Redis store)."""

import hashlib
import hmac
import os
import re
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from fastapi import FastAPI
from redis.asyncio import Redis

from apiforge.core.errors import ApiforgeError, AuthenticationError, UnavailableError
from apiforge.gateway.context import Caller, GatewayContext
from apiforge.gateway.signing import (
    DEGRADED,
    NONCE_TTL_SECONDS,
    SKEW_SECONDS,
    MemoryNonceStore,
    NonceStore,
    RedisNonceStore,
    SignatureResolver,
    canonical_query,
    canonical_string,
    check_timestamp,
    sign,
    signature_matches,
)
from apiforge.keys.policy import KeyRecord
from apiforge.tools.clock import CLOCK_SKEW_SECONDS
from apiforge.tools.ids import new_id

REDIS_URL = os.environ.get("APIFORGE_TEST_REDIS_URL", "")
DOC = Path(__file__).resolve().parents[3] / "docs" / "signing.md"
SECRET = "app-unit-secret-" + "k" * 32
NOW = 1_700_000_000
NONCE = "n-0123456789abcdef"
BODY = b'{"appId":"a","api":"getPost","args":{"id":1}}'


# --- the canonical string -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("", ""),
        ("b=2&a=1", "a=1&b=2"),
        ("a=2&a=1&a=10", "a=1&a=10&a=2"),
        ("q=hello+world", "q=hello%20world"),
        ("q=hello%20world", "q=hello%20world"),
        ("name=%E4%B8%AD", "name=%E4%B8%AD"),
        ("x=a%2Fb&flag", "flag=&x=a%2Fb"),
        ("&&a=1&", "a=1"),
        ("t=~-_.", "t=~-_."),
        ("k=%27%3B%20DROP", "k=%27%3B%20DROP"),
    ],
)
def test_canonical_query_sorts_and_normalises_encoding(query: str, expected: str) -> None:
    assert canonical_query(query) == expected


def test_canonical_string_is_six_lines_in_order() -> None:
    text = canonical_string("post", "/api/v1/invocations", "b=2&a=1", BODY, str(NOW), NONCE)
    assert text.split("\n") == [
        "POST",
        "/api/v1/invocations",
        "a=1&b=2",
        hashlib.sha256(BODY).hexdigest(),
        str(NOW),
        NONCE,
    ]
    assert not text.endswith("\n")


def test_empty_body_hashes_the_empty_string() -> None:
    text = canonical_string("POST", "/p", "", b"", "1", NONCE)
    assert text.split("\n")[3] == hashlib.sha256(b"").hexdigest()


def test_sign_is_hex_hmac_sha256_of_the_canonical_string() -> None:
    text = canonical_string("POST", "/api/v1/invocations", "", BODY, str(NOW), NONCE)
    expected = hmac.new(SECRET.encode(), text.encode(), hashlib.sha256).hexdigest()
    assert sign(SECRET, text) == expected
    assert re.fullmatch(r"[0-9a-f]{64}", expected)


def test_signature_comparison_ignores_hex_case_and_refuses_any_other_value() -> None:
    text = canonical_string("POST", "/api/v1/invocations", "", BODY, str(NOW), NONCE)
    good = sign(SECRET, text)
    assert signature_matches(SECRET, text, good)
    assert signature_matches(SECRET, text, good.upper())
    assert not signature_matches(SECRET, text, good[:-1] + ("0" if good[-1] != "0" else "1"))
    assert not signature_matches("another-secret", text, good)
    assert not signature_matches(SECRET, text, "")


@pytest.mark.parametrize("offset", [0, 1, -1, 299, -299, 300, -300])
def test_timestamps_within_300_seconds_are_accepted(offset: int) -> None:
    check_timestamp(str(NOW + offset), NOW)


@pytest.mark.parametrize("offset", [301, -301, 3600, -NOW])
def test_timestamps_beyond_300_seconds_are_refused_with_the_server_time(offset: int) -> None:
    with pytest.raises(AuthenticationError) as caught:
        check_timestamp(str(NOW + offset), NOW)
    assert caught.value.reason == "timestamp_skewed"
    assert caught.value.details == {"serverTime": NOW}


@pytest.mark.parametrize("value", ["", "abc", "1.5", "-5", "1e9", " 1700000000", "9" * 13])
def test_malformed_timestamps_are_refused(value: str) -> None:
    with pytest.raises(AuthenticationError) as caught:
        check_timestamp(value, NOW)
    assert caught.value.reason == "invalid_timestamp"


# --- the worked example of docs/signing.md ------------------------------------------------


def _doc_value(text: str, label: str) -> str:
    match = re.search(rf"^\| {re.escape(label)} \| `([^`]*)` \|$", text, re.MULTILINE)
    assert match, f"docs/signing.md lost the `{label}` row of the worked example"
    return match.group(1)


def test_the_worked_example_in_the_docs_recomputes() -> None:
    text = DOC.read_text(encoding="utf-8")
    secret = _doc_value(text, "secret")
    body = _doc_value(text, "body").encode()
    query = _doc_value(text, "query string")
    timestamp = _doc_value(text, "X-Timestamp")
    nonce = _doc_value(text, "X-Nonce")
    canonical = canonical_string("POST", "/api/v1/invocations", query, body, timestamp, nonce)
    block = re.search(r"```text\n(.*?)\n```", text, re.DOTALL)
    assert block, "docs/signing.md lost the canonical string block"
    assert block.group(1) == canonical
    assert _doc_value(text, "SHA-256 of the body") == hashlib.sha256(body).hexdigest()
    assert _doc_value(text, "X-Sign") == sign(secret, canonical)


# --- nonce stores: one conformance test for every implementation ---------------------------


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(params=["memory", "redis"])
async def nonce_store(request: pytest.FixtureRequest) -> AsyncIterator[NonceStore]:
    if request.param == "memory":
        yield MemoryNonceStore()
        return
    if not REDIS_URL:
        pytest.skip("the Redis store runs with APIFORGE_TEST_REDIS_URL")
    client = Redis.from_url(REDIS_URL)
    prefix = f"apiforge-test:nonce-{new_id()}:"
    yield RedisNonceStore(client, prefix)
    keys = [key async for key in client.scan_iter(match=f"{prefix}*")]
    if keys:
        await client.delete(*keys)
    await client.aclose()


async def test_a_nonce_is_accepted_once(nonce_store: NonceStore) -> None:
    assert await nonce_store.claim("key-1:abc", NONCE_TTL_SECONDS) is True
    assert await nonce_store.claim("key-1:abc", NONCE_TTL_SECONDS) is False
    assert await nonce_store.claim("key-1:abc", NONCE_TTL_SECONDS) is False


async def test_nonces_of_different_keys_are_independent(nonce_store: NonceStore) -> None:
    assert await nonce_store.claim("key-1:abc", NONCE_TTL_SECONDS) is True
    assert await nonce_store.claim("key-2:abc", NONCE_TTL_SECONDS) is True


async def test_redis_nonces_expire_with_the_ttl() -> None:
    if not REDIS_URL:
        pytest.skip("runs with APIFORGE_TEST_REDIS_URL")
    client = Redis.from_url(REDIS_URL)
    prefix = f"apiforge-test:nonce-{new_id()}:"
    store = RedisNonceStore(client, prefix)
    try:
        assert await store.claim("k:n", NONCE_TTL_SECONDS)
        ttl = await client.ttl(f"{prefix}nonce:k:n")
        assert NONCE_TTL_SECONDS - 5 <= ttl <= NONCE_TTL_SECONDS
    finally:
        await client.delete(f"{prefix}nonce:k:n")
        await client.aclose()


async def test_memory_nonces_expire_and_are_pruned() -> None:
    clock = FakeClock()
    store = MemoryNonceStore(clock)
    for index in range(100):
        assert await store.claim(f"k:{index}", 600)
    clock.now += 599
    assert not await store.claim("k:0", 600)
    assert len(store) == 100
    clock.now += 1
    assert await store.claim("k:0", 600)  # expired: accepted again
    assert len(store) == 1  # every other expired entry was pruned on the way


class FakeWall(FakeClock):
    def __init__(self) -> None:
        self.now = 1_700_000_000.5


async def test_nonces_saved_at_a_graceful_stop_are_restored_with_their_expiry(
    tmp_path: Path,
) -> None:
    path = tmp_path / "data" / "nonces.json"
    clock, wall = FakeClock(), FakeWall()
    before = MemoryNonceStore(clock, wall)
    assert await before.claim("k:old", 600)
    clock.now += 500
    wall.now += 500
    assert await before.claim("k:new", 600)
    clock.now += 500  # "k:new" has 100 s left, "k:old" none
    wall.now += 500
    assert await before.claim("k:last", 600)
    before.save(path)
    wall.now += 30  # stopped for 30 s; the next process has a clock of its own
    clock = FakeClock()
    after = MemoryNonceStore(clock, wall)
    after.restore(path)
    assert not path.exists()  # a later stop that saves nothing must not find it
    assert after.not_before == 0
    assert not await after.claim("k:last", 600)
    assert not await after.claim("k:new", 600)
    assert await after.claim("k:old", 600)  # expired before the stop
    clock.now += 71
    assert await after.claim("k:new", 600)  # its 100 s are over
    assert not await after.claim("k:last", 600)


@pytest.mark.parametrize("content", [None, "", "{", '{"nonces": [["k:a", "soon"]]}', "[]"])
async def test_without_a_usable_nonce_file_calls_signed_before_the_start_are_refused(
    tmp_path: Path, content: str | None
) -> None:
    path = tmp_path / "nonces.json"
    if content is not None:
        path.write_text(content)
    wall = FakeWall()
    store = MemoryNonceStore(FakeClock(), wall)
    store.restore(path)
    assert store.not_before == 1_700_000_000
    assert not path.exists()
    assert len(store) == 0


async def test_an_unreachable_redis_refuses_signed_calls_and_counts_it() -> None:
    client = Redis.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=0.2)
    store = RedisNonceStore(client, "apiforge-test:")
    before = DEGRADED.labels("nonce")._value.get()
    try:
        with pytest.raises(UnavailableError) as caught:
            await store.claim("k:n", NONCE_TTL_SECONDS)
    finally:
        await client.aclose()
    assert caught.value.status == 503
    assert caught.value.reason == "nonce_store_unavailable"
    assert DEGRADED.labels("nonce")._value.get() == before + 1


# --- the resolver -------------------------------------------------------------------------


class FakeKeys:
    """Signing keys by id, standing in for the keys domain; `refused` keys fail their policy."""

    def __init__(self, secrets: dict[str, str], refused: frozenset[str] = frozenset()) -> None:
        self.secrets = secrets
        self.refused = refused
        self.looked_up: list[str] = []
        self.admitted: list[str] = []

    async def find(self, ctx: GatewayContext, key_id: str) -> tuple[KeyRecord, str] | None:
        self.looked_up.append(key_id)
        secret = self.secrets.get(key_id)
        if secret is None:
            return None
        record = KeyRecord(
            id=key_id,
            kind="app",
            workspace_id="ws-1",
            app_id="app-1",
            subscription_id="sub-1",
            role=None,
            account_id=None,
            expires_at=None,
            revoked=key_id in self.refused,
            allowed_ips=(),
            allowed_origins=frozenset(),
        )
        return record, secret

    def admit(self, ctx: GatewayContext, record: KeyRecord) -> Caller:
        if record.revoked:
            raise AuthenticationError("revoked", reason="api_key_revoked")
        self.admitted.append(record.id)
        return Caller(kind="app_key", workspace_id="ws-1", key_id=record.id, app_id="app-1")


def _context(
    headers: dict[str, str], body: bytes = BODY, query: str = "", path: str = "/api/v1/invocations"
) -> GatewayContext:
    return GatewayContext(
        headers={k.lower(): v for k, v in headers.items()},
        client_ip="127.0.0.1",
        request_id="r",
        raw_body=body,
        path=path,
        query_string=query,
    )


def _signed(
    key_id: str = "key-1",
    secret: str = SECRET,
    *,
    body: bytes = BODY,
    query: str = "",
    timestamp: int = NOW,
    nonce: str = NONCE,
) -> dict[str, str]:
    canonical = canonical_string("POST", "/api/v1/invocations", query, body, str(timestamp), nonce)
    return {
        "X-App-Id": key_id,
        "X-Timestamp": str(timestamp),
        "X-Nonce": nonce,
        "X-Sign": sign(secret, canonical),
    }


@pytest.fixture
def keys() -> FakeKeys:
    return FakeKeys({"key-1": SECRET, "key-revoked": SECRET}, frozenset({"key-revoked"}))


@pytest.fixture
def resolver(app: FastAPI, keys: FakeKeys) -> SignatureResolver:
    return SignatureResolver(
        app.state.gateway_state, keys=keys, nonces=MemoryNonceStore(), clock=lambda: NOW + 0.5
    )


async def _refusal(resolver: SignatureResolver, ctx: GatewayContext) -> ApiforgeError:
    with pytest.raises(ApiforgeError) as caught:
        await resolver.resolve(ctx)
    assert caught.value.status == 401
    return caught.value


async def test_a_call_without_x_sign_is_left_to_other_resolvers(
    resolver: SignatureResolver, keys: FakeKeys
) -> None:
    assert await resolver.resolve(_context({"X-App-Id": "key-1"})) is None
    assert keys.looked_up == []


async def test_a_valid_signature_names_the_key_as_caller(resolver: SignatureResolver) -> None:
    caller = await resolver.resolve(_context(_signed(query="b=2&a=1"), query="b=2&a=1"))
    assert caller is not None
    assert (caller.kind, caller.key_id, caller.workspace_id) == ("app_key", "key-1", "ws-1")


async def test_query_order_does_not_matter(resolver: SignatureResolver) -> None:
    assert await resolver.resolve(_context(_signed(query="a=1&b=2"), query="b=2&a=1"))


async def test_missing_headers_are_named(resolver: SignatureResolver) -> None:
    headers = _signed()
    del headers["X-Nonce"], headers["X-App-Id"]
    error = await _refusal(resolver, _context(headers))
    assert error.reason == "signature_incomplete"
    assert error.details == {"missing": ["X-App-Id", "X-Nonce"]}


async def test_a_replayed_nonce_is_refused(resolver: SignatureResolver) -> None:
    assert await resolver.resolve(_context(_signed()))
    error = await _refusal(resolver, _context(_signed()))
    assert error.reason == "nonce_reused"


async def test_a_bad_signature_does_not_burn_the_nonce(resolver: SignatureResolver) -> None:
    forged = {**_signed(), "X-Sign": "0" * 64}
    assert (await _refusal(resolver, _context(forged))).reason == "invalid_signature"
    assert await resolver.resolve(_context(_signed()))


async def test_the_key_policy_runs_only_after_the_signature_checked_out(
    resolver: SignatureResolver, keys: FakeKeys
) -> None:
    forged = {**_signed(key_id="key-revoked"), "X-Sign": "0" * 64}
    # Without the secret, a revoked key looks like any wrong signature.
    assert (await _refusal(resolver, _context(forged))).reason == "invalid_signature"
    signed = _context(_signed(key_id="key-revoked"))
    assert (await _refusal(resolver, signed)).reason == "api_key_revoked"
    assert keys.admitted == []


@pytest.mark.parametrize(
    ("body", "query", "path"),
    [
        (BODY.replace(b"1", b"2"), "", "/api/v1/invocations"),
        (BODY + b" ", "", "/api/v1/invocations"),
        (BODY, "a=1", "/api/v1/invocations"),
        (BODY, "", "/api/v1/invocations/"),
        (BODY, "", "/api/v2/invocations"),
    ],
)
async def test_tampered_body_query_or_path_is_refused(
    resolver: SignatureResolver, body: bytes, query: str, path: str
) -> None:
    error = await _refusal(resolver, _context(_signed(), body=body, query=query, path=path))
    assert error.reason == "invalid_signature"


async def test_a_signature_with_another_secret_is_refused(resolver: SignatureResolver) -> None:
    error = await _refusal(resolver, _context(_signed(secret="not-the-secret")))
    assert error.reason == "invalid_signature"


async def test_an_unknown_key_answers_like_a_wrong_signature(
    resolver: SignatureResolver, keys: FakeKeys
) -> None:
    error = await _refusal(resolver, _context(_signed(key_id="key-404")))
    assert (error.reason, error.message) == ("invalid_signature", "The signature does not match")
    assert keys.looked_up == ["key-404"]


@pytest.mark.parametrize("offset", [301, -301, -86400])
async def test_skewed_timestamps_are_refused_before_any_key_lookup(
    resolver: SignatureResolver, keys: FakeKeys, offset: int
) -> None:
    error = await _refusal(resolver, _context(_signed(timestamp=NOW + offset)))
    assert error.reason == "timestamp_skewed"
    assert keys.looked_up == []


@pytest.mark.parametrize("nonce", ["short", "x" * 65, "has space 012345678", "ü" * 20, ""])
async def test_malformed_nonces_are_refused(resolver: SignatureResolver, nonce: str) -> None:
    error = await _refusal(resolver, _context(_signed(nonce=nonce)))
    assert error.reason == ("signature_incomplete" if not nonce else "invalid_nonce")


@pytest.mark.parametrize("value", ["zz" * 32, "ab" * 31, "ab" * 33, "'; DROP TABLE keys; --"])
async def test_malformed_signatures_are_refused_without_a_lookup(
    resolver: SignatureResolver, keys: FakeKeys, value: str
) -> None:
    error = await _refusal(resolver, _context({**_signed(), "X-Sign": value}))
    assert error.reason == "invalid_signature"
    assert keys.looked_up == []


async def test_calls_signed_at_or_before_a_restart_that_lost_its_nonces_are_refused(
    app: FastAPI, keys: FakeKeys
) -> None:
    nonces = MemoryNonceStore()
    nonces.not_before = NOW - 10
    resolver = SignatureResolver(
        app.state.gateway_state, keys=keys, nonces=nonces, clock=lambda: NOW + 0.5
    )
    for stamp in (NOW - 10, NOW - 300):
        error = await _refusal(resolver, _context(_signed(timestamp=stamp)))
        assert error.reason == "timestamp_before_restart"
    # A forged call learns nothing about the restart; a refused one burns no nonce.
    forged = {**_signed(timestamp=NOW - 10), "X-Sign": "0" * 64}
    assert (await _refusal(resolver, _context(forged))).reason == "invalid_signature"
    assert len(nonces) == 0
    assert await resolver.resolve(_context(_signed(timestamp=NOW - 9)))
    assert await resolver.resolve(_context(_signed(timestamp=NOW, nonce="n-fresh-0123456789")))


def test_a_nonce_outlives_every_moment_its_timestamp_is_accepted() -> None:
    """The first use may come as early as the window opens and a replay as late as it closes:
    the nonce must still be remembered then (the window is 601 s of real time, not 600)."""
    signed = 1_800_000_000
    earliest, latest = signed - SKEW_SECONDS + 0.001, signed + SKEW_SECONDS + 0.999
    check_timestamp(str(signed), earliest)
    check_timestamp(str(signed), latest)
    assert latest - earliest < NONCE_TTL_SECONDS


def test_a_nonce_outlives_its_timestamp_on_a_node_whose_clock_is_behind() -> None:
    """Two nodes share the nonces: the first use may come as early as the first node's window
    opens, a replay as late as a node up to `CLOCK_SKEW_SECONDS` behind still accepts it."""
    signed = 1_800_000_000
    first_use = signed - SKEW_SECONDS + 0.001  # the first node's clock, and real time
    behind = CLOCK_SKEW_SECONDS
    replay = signed + SKEW_SECONDS + 0.999 + behind  # real time; the slow node reads `- behind`
    check_timestamp(str(signed), first_use)
    check_timestamp(str(signed), replay - behind)
    assert replay - first_use < NONCE_TTL_SECONDS
