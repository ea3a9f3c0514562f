"""Security review of HMAC-signed gateway calls (gateway/signing.py, docs/signing.md): a captured
call cannot be re-sent in another spelling, separators and encodings cannot move bytes between
the canonical lines or pairs, header values must be exactly their documented shape, a failed
signature never burns a client's nonce, every refusal is the documented one, and the doc's Python
example signs odd queries exactly as the server verifies them."""

import asyncio
import hashlib
import hmac
import json
import re
import time
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from httpx import AsyncClient, Response
from hypothesis import given, settings
from hypothesis import strategies as st

from apiforge.core.errors import AuthenticationError
from apiforge.gateway.context import GatewayContext
from apiforge.gateway.signing import (
    MemoryNonceStore,
    SignatureResolver,
    canonical_query,
    canonical_string,
    check_timestamp,
)
from tests.e2e._apps import new_api, new_app
from tests.e2e._keys import app_key, call, create_key, notes_app
from tests.e2e._workspaces import assert_error, data_of, team
from tests.factories import register

DOC = Path(__file__).resolve().parents[2] / "docs" / "signing.md"
PATH = "/api/v1/invocations"
NOW = 1_700_000_000


def _doc_python() -> str:
    (code,) = re.findall(r"```python\n(.*?)```", DOC.read_text(encoding="utf-8"), re.S)
    return str(code)


def _doc_canonical_query() -> Any:
    """The `canonical_query` function of the doc's Python example, run as written."""
    source = _doc_python()
    start = source.index("def canonical_query")
    end = source.index("\ndef ", start + 1)
    namespace: dict[str, Any] = {}
    exec(  # noqa: S102 - the doc's own code
        "from urllib.parse import quote, unquote_plus\n" + source[start:end], namespace
    )
    return namespace["canonical_query"]


def _sign(
    key_id: str,
    secret: str,
    body: bytes,
    *,
    query: str = "",
    timestamp: str | None = None,
    nonce: str | None = None,
) -> dict[str, str]:
    """The four headers, signed as the doc's Python example signs (its own `canonical_query`)."""
    stamp = timestamp or str(int(time.time()))
    nonce = nonce or uuid.uuid4().hex
    canonical = "\n".join(
        [
            "POST",
            PATH,
            _doc_canonical_query()(query),
            hashlib.sha256(body).hexdigest(),
            stamp,
            nonce,
        ]
    )
    sign = hmac.new(secret.encode(), canonical.encode(), hashlib.sha256).hexdigest()
    return {"X-App-Id": key_id, "X-Timestamp": stamp, "X-Nonce": nonce, "X-Sign": sign}


def _body(app_id: str, api: str, version: str = "latest", **args: Any) -> bytes:
    return json.dumps({"appId": app_id, "api": api, "version": version, "args": args}).encode()


async def _send(
    client: AsyncClient,
    body: bytes,
    headers: dict[str, str],
    query: str = "",
    path: str = PATH,
) -> Response:
    url = f"{path}?{query}" if query else path
    return await client.post(
        url, content=body, headers={"Content-Type": "application/json", **headers}
    )


async def _setup(client: AsyncClient) -> tuple[str, str, str]:
    """A public notes app and a consumer's `app-` key: (app id, key id, secret)."""
    owner = await register(client)
    app_id = await notes_app(client, owner, visibility="public")
    key_id, secret = await app_key(client, await register(client), app_id)
    return app_id, key_id, secret


async def _notes(client: AsyncClient, secret: str, app_id: str) -> list[str]:
    data = data_of(await call(client, secret, app_id, "listNotes"))
    return sorted(note["text"] for note in data["notes"]["list"])


# --- the canonical string ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("one", "other"),
    [
        ("a=1%262", "a=1&2"),  # an encoded `&` stays inside its value
        ("a=1%3D2", "a%3D1=2"),  # an encoded `=` stays on its side
        ("a=b=c", "a=b&c"),  # only the first `=` splits
        ("a=%2B", "a=+"),  # `+` is a space, `%2B` a plus
        ("a=%0A", "a="),  # an encoded newline cannot end the query line
        ("a=%25zz", "a=zz"),
        ("a=1;b=2", "a=1&b=2"),  # `;` is no separator
    ],
)
def test_separators_inside_names_and_values_cannot_move(one: str, other: str) -> None:
    assert canonical_query(one) != canonical_query(other)
    assert "\n" not in canonical_query(one)


_TEXT = st.text(st.characters(exclude_categories=["Cs"]), max_size=8)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(_TEXT, _TEXT), max_size=6))
def test_the_canonical_query_keeps_every_decoded_pair(pairs: list[tuple[str, str]]) -> None:
    """Whatever the names and values hold, the canonical form is exactly the multiset of decoded
    pairs: two queries share a signature only when a server decodes them to the same pairs."""
    raw = "&".join(f"{quote(n, safe='')}={quote(v, safe='')}" for n, v in pairs)
    encoded = sorted((quote(n, safe="-_.~"), quote(v, safe="-_.~")) for n, v in pairs)
    assert canonical_query(raw) == "&".join(f"{n}={v}" for n, v in encoded)


@settings(max_examples=300, deadline=None)
@given(st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E, exclude_characters="#")))
def test_the_doc_python_example_canonicalises_any_ascii_query_as_the_server(query: str) -> None:
    assert _doc_canonical_query()(query) == canonical_query(query)


def test_escapes_that_are_not_utf8_canonicalise_as_documented() -> None:
    # Documented, so an implementation in another language gets the same line 3.
    assert canonical_query("name=%E9") == "name=%EF%BF%BD"
    assert canonical_query("p=100%") == "p=100%25"
    step = DOC.read_text(encoding="utf-8").split("## The canonical string")[1].split("##")[0]
    flat = " ".join(step.split())
    assert "`%E9` signs as `%EF%BF%BD`" in flat
    assert "`100%` as `100%25`" in flat


def test_the_method_is_upper_cased_and_the_lines_cannot_merge() -> None:
    one = canonical_string("post", PATH, "", b"", "1", "n" * 16)
    assert one.split("\n")[0] == "POST"
    assert len(one.split("\n")) == 6


# --- header values: exactly their shape --------------------------------------------------


@pytest.mark.parametrize(
    "value", ["1700000000\n", "+1700000000", "1700000000.0", "0x6553f100", "1_700_000_000"]
)
def test_a_timestamp_must_be_only_digits(value: str) -> None:
    with pytest.raises(AuthenticationError) as caught:
        check_timestamp(value, NOW)
    assert caught.value.reason == "invalid_timestamp"


@pytest.mark.parametrize(
    ("header", "value", "reason"),
    [
        ("X-Nonce", "n-0123456789abcdef\n", "invalid_nonce"),
        ("X-Sign", "0" * 64 + "\n", "invalid_signature"),
        ("X-Timestamp", "{now}\n", "invalid_timestamp"),
    ],
)
async def test_a_value_ending_in_a_newline_is_refused(header: str, value: str, reason: str) -> None:
    """HTTP/1.1 servers cannot deliver such a header, but the resolver must not rely on that:
    `re.match` with `$` accepts a trailing newline, so the checks match the whole value."""

    class _Keys:
        async def find(self, ctx: GatewayContext, key_id: str) -> None:
            return None

        def admit(self, ctx: GatewayContext, record: Any) -> Any:
            raise AssertionError("never admitted")

    state: Any = None  # unused: keys and nonces are given
    resolver = SignatureResolver(state, keys=_Keys(), nonces=MemoryNonceStore(), clock=lambda: NOW)
    headers = {
        "x-app-id": "01" + "a" * 24,
        "x-timestamp": str(NOW),
        "x-nonce": "n-0123456789abcdef",
        "x-sign": "0" * 64,
    }
    headers[header.lower()] = value.format(now=NOW)
    ctx = GatewayContext(headers=headers, client_ip="127.0.0.1", request_id="r", raw_body=b"")
    with pytest.raises(AuthenticationError) as caught:
        await resolver.resolve(ctx)
    assert caught.value.reason == reason


@pytest.mark.parametrize("stamp", ["+{now}", "{now}.0", "{now}e0", "-{now}", "0x1", "{now}{now}"])
async def test_malformed_timestamps_over_http_are_refused_and_nothing_runs(
    client: AsyncClient, stamp: str
) -> None:
    app_id, key_id, secret = await _setup(client)
    body = _body(app_id, "addNote", text="odd time")
    stamp = stamp.format(now=int(time.time()))
    headers = _sign(key_id, secret, body, timestamp=stamp)
    assert_error(await _send(client, body, headers), 401, "invalid_timestamp")
    assert await _notes(client, secret, app_id) == []


# --- a captured call, re-sent ---------------------------------------------------------------


async def test_a_captured_call_cannot_be_re_sent_in_another_spelling(client: AsyncClient) -> None:
    app_id, key_id, secret = await _setup(client)
    body = _body(app_id, "addNote", text="once")
    query = "b=x+y&a=1"
    headers = _sign(key_id, secret, body, query=query)
    data_of(await _send(client, body, headers, query))

    # Spellings with the same canonical string are the same call: its nonce is spent.
    same = [
        (body, {**headers, "X-Sign": headers["X-Sign"].upper()}, query, PATH),
        (body, headers, "a=1&b=x%20y", PATH),
        (body, headers, "a=1&&b=x+y&", PATH),
        (body, headers, query, "/api/v1/invocation%73"),
    ]
    for sent, sent_headers, sent_query, path in same:
        assert_error(await _send(client, sent, sent_headers, sent_query, path), 401, "nonce_reused")

    # Any other spelling changes what was signed.
    other = [
        (body, {**headers, "X-Timestamp": "0" + headers["X-Timestamp"]}, query),
        (body, {**headers, "X-Nonce": headers["X-Nonce"].upper()}, query),
        (body + b"\n", headers, query),
        (body.replace(b'": "', b'":"'), headers, query),  # whitespace JSON ignores
        (body, headers, "a=1&b=x%2By"),
        (body, headers, "a=1&b=x+y&c"),
        (body, headers, "a=1&a=1&b=x+y"),
    ]
    for sent, sent_headers, sent_query in other:
        response = await _send(client, sent, sent_headers, sent_query)
        assert_error(response, 401, "invalid_signature")

    # The method cannot be overridden into one the gateway does not serve.
    override = {**headers, "X-HTTP-Method-Override": "DELETE"}
    assert_error(await _send(client, body, override, query), 405, "method_not_allowed")
    assert await _notes(client, secret, app_id) == ["once"]


async def test_a_forged_signature_never_burns_the_clients_nonce(client: AsyncClient) -> None:
    """Someone who saw a nonce (or guesses one) cannot spend it: only a matching signature claims
    it, so the client's own call with that nonce still goes through."""
    app_id, key_id, secret = await _setup(client)
    body = _body(app_id, "addNote", text="mine")
    headers = _sign(key_id, secret, body)
    for forged in ("0" * 64, headers["X-Sign"][::-1]):
        response = await _send(client, body, {**headers, "X-Sign": forged})
        assert_error(response, 401, "invalid_signature")
    other_body = _body(app_id, "addNote", text="theirs")
    assert_error(await _send(client, other_body, headers), 401, "invalid_signature")
    data_of(await _send(client, body, headers))
    assert await _notes(client, secret, app_id) == ["mine"]


async def test_a_signature_made_with_one_key_does_not_work_with_another(
    client: AsyncClient,
) -> None:
    owner = await register(client)
    app_id = await notes_app(client, owner)
    first_id, first_secret = await app_key(client, owner, app_id)
    second_id, _ = await app_key(client, owner, app_id)
    body = _body(app_id, "echo", text="x")
    headers = _sign(first_id, first_secret, body)
    swapped = {**headers, "X-App-Id": second_id}
    assert_error(await _send(client, body, swapped), 401, "invalid_signature")
    # Nor does the key's secret or its hash stand in for the id.
    for stand_in in (first_secret, hashlib.sha256(first_secret.encode()).hexdigest()):
        response = await _send(client, body, {**headers, "X-App-Id": stand_in})
        assert_error(response, 401, "invalid_signature")
    assert data_of(await _send(client, body, headers)) == {"echo": "x"}


# --- odd queries, signed by the doc's example -------------------------------------------------


ODD_QUERIES = [
    "q=a+b&q=a%20b",
    "x=%FF&y=%e9&z=%C3%A9",
    "k=é中",
    "k=100%&m=%zz&n=%2",
    "flag&=v&a=&b",
    "k=%3D%26%2B",
    "k='\"<>{}|\\^`",
    "k=a;b&p=/a/b?c",
    "t=~-_.&a=2&a=10&a=1",
]


@pytest.mark.parametrize("query", ODD_QUERIES)
async def test_the_doc_python_example_signs_odd_queries_the_server_accepts(
    client: AsyncClient, query: str
) -> None:
    app_id, key_id, secret = await _setup(client)
    body = _body(app_id, "echo", text="odd")
    headers = _sign(key_id, secret, body, query=query)
    assert data_of(await _send(client, body, headers, query)) == {"echo": "odd"}


# --- refusals, as documented -----------------------------------------------------------------


def _refusals() -> str:
    return DOC.read_text(encoding="utf-8").split("## Refusals")[1]


async def test_an_orphaned_workspace_key_cannot_sign_and_the_doc_names_the_refusal(
    client: AsyncClient,
) -> None:
    owner, workspace_id, members = await team(client, "admin")
    in_team = {**owner.headers, "X-Workspace-Id": workspace_id}
    app_id = await new_app(client, in_team, "Team notes")
    steps = [{"id": "echo", "type": "set", "value": {"expr": "args.text"}}]
    params = [{"name": "text", "type": "string", "required": True, "max": 20}]
    await new_api(client, in_team, app_id, "echo", params=params, steps=steps)
    admin = members["admin"]
    admin_in_team = {**admin.headers, "X-Workspace-Id": workspace_id}
    ws_id, ws_secret = await create_key(client, admin_in_team, type="ws", role="editor")
    body = _body(app_id, "echo", version="dev", text="ws")
    assert data_of(await _send(client, body, _sign(ws_id, ws_secret, body))) == {"echo": "ws"}

    path = f"/api/v1/workspaces/{workspace_id}/members/{admin.account_id}"
    data_of(await client.delete(path, headers=owner.headers))
    deadline = time.monotonic() + 5
    while True:  # the key cache holds a record for at most a second
        response = await _send(client, body, _sign(ws_id, ws_secret, body))
        if response.status_code != 200 or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.1)
    assert_error(response, 401, "api_key_orphaned")
    assert "`api_key_orphaned`" in _refusals()


def test_every_refusal_a_signing_key_s_policy_gives_is_documented() -> None:
    policy = (Path(__file__).resolve().parents[2] / "src/apiforge/keys/policy.py").read_text(
        encoding="utf-8"
    )
    body = policy.split("def check_key")[1]
    reasons = set(re.findall(r'reason="([a-z_]+)"', body)) - {"origin_not_allowed"}  # pk only
    assert reasons
    documented = set(re.findall(r"`([a-z_]+)`", _refusals()))
    assert reasons <= documented, f"undocumented: {sorted(reasons - documented)}"
