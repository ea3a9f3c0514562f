"""Requests two readers could read two ways, read alike on both edges: a credential or an
idempotency header sent on two lines (the gateway took the last, the management API the first)
is refused, and a JSON body starting with a UTF-8 byte order mark is read on both (the gateway
called it malformed)."""

import json

import pytest
from httpx import AsyncClient

from tests.e2e._idempotency import hits_app, total
from tests.e2e._keys import app_key, create_key
from tests.e2e._workspaces import assert_error, data_of
from tests.factories import User, register

INVOCATIONS = "/api/v1/invocations"
BOM = b"\xef\xbb\xbf"

# --- one header, two lines -----------------------------------------------------------------------

# Header → two lines of it; refused whatever they say, equal lines included.
REPEATED = {
    "X-Api-Key": ("{secret}", "{secret}"),
    "Authorization": ("Bearer one", "Bearer two"),
    "Idempotency-Key": ("order-1", "order-2"),
    "X-Idempotency-Token": ("tok-1", "tok-2"),
    "X-Request-Seq": ("1", "2"),
    "X-End-User-Token": ("a", "b"),
    "X-Sign": ("0" * 64, "1" * 64),
}


async def _hits(client: AsyncClient) -> tuple[str, str]:
    """(app id, a consumer's key secret) of the `hits` app: each run of `hit` inserts a record."""
    owner, consumer = await register(client), await register(client)
    app_id = await hits_app(client, owner)
    _, secret = await app_key(client, consumer, app_id)
    return app_id, secret


@pytest.mark.parametrize("name", REPEATED)
async def test_a_header_sent_twice_is_a_400_on_the_gateway(client: AsyncClient, name: str) -> None:
    """Two `X-Api-Key` lines ran as the key on the last line here, and as the one on the first
    behind a proxy reading the first: who called depended on who read. Nothing runs now."""
    app_id, secret = await _hits(client)
    lines = [("X-Api-Key", secret)] if name != "X-Api-Key" else []
    lines += [(name, value.format(secret=secret)) for value in REPEATED[name]]
    body = {"appId": app_id, "api": "hit", "version": "latest", "args": {"n": 1}}
    response = await client.post(INVOCATIONS, json=body, headers=lines)
    data = assert_error(response, 400, "duplicate_header")
    assert data["errors"] == [{"field": name, "message": "must be sent on one line only"}]
    assert "X-Request-ID" in response.headers
    assert await total(client, secret, app_id) == 0
    # One line of the same key is a call like any other (no claim was left behind).
    once = await client.post(
        INVOCATIONS, json=body, headers={"X-Api-Key": secret, "Idempotency-Key": "order-1"}
    )
    assert data_of(once)["total"] == 1


async def test_a_header_sent_twice_is_a_400_on_the_gateway_preflight_too(
    client: AsyncClient,
) -> None:
    response = await client.options(INVOCATIONS, headers=[("X-Api-Key", "a"), ("X-Api-Key", "b")])
    assert_error(response, 400, "duplicate_header")


async def _names(client: AsyncClient, user: User) -> list[str]:
    listed = data_of(await client.get("/api/v1/workspaces", headers=user.headers))["list"]
    return sorted(w["name"] for w in listed)


@pytest.mark.parametrize(
    "name",
    [
        "Authorization",
        "X-Api-Key",
        "Idempotency-Key",
        "X-Idempotency-Token",
        "X-Request-Seq",
        "X-Workspace-Id",
    ],
)
async def test_a_header_sent_twice_is_a_400_on_the_management_api(
    client: AsyncClient, name: str
) -> None:
    """Starlette reads the first line and the idempotency middleware read the last: one request,
    two keys. Refused before anything reads either, and nothing is created."""
    user = await register(client)
    _, ws_key = await create_key(client, user.headers, type="ws", role="admin")
    before = await _names(client, user)
    values = {
        "Authorization": (user.headers["Authorization"], f"Bearer {ws_key}"),
        "X-Api-Key": (ws_key, ws_key),
    }.get(name, ("one-1", "two-2"))
    lines = [("Authorization", user.headers["Authorization"])] if name != "Authorization" else []
    lines += [(name, value) for value in values]
    response = await client.post("/api/v1/workspaces", json={"name": "Twice"}, headers=lines)
    data = assert_error(response, 400, "duplicate_header")
    assert data["errors"][0]["field"] == name
    assert "X-Request-ID" in response.headers
    assert await _names(client, user) == before
    # A read is refused too: the caller is as ambiguous.
    listed = await client.get("/api/v1/workspaces", headers=lines)
    assert_error(listed, 400, "duplicate_header")


async def test_headers_sent_once_each_are_not_refused(client: AsyncClient) -> None:
    """Repeated lines of other headers (`Accept`, `X-Forwarded-For`) are no concern here."""
    user = await register(client)
    lines = [
        *user.headers.items(),
        ("Accept", "application/json"),
        ("Accept", "*/*"),
        ("X-Forwarded-For", "203.0.113.1"),
        ("X-Forwarded-For", "203.0.113.2"),
    ]
    made = await client.post("/api/v1/workspaces", json={"name": "Once"}, headers=lines)
    assert data_of(made)["id"]


# --- a UTF-8 byte order mark before a JSON body ------------------------------------------------


async def test_a_byte_order_mark_is_ignored_on_both_edges(client: AsyncClient) -> None:
    """RFC 8259 §8.1 lets a parser ignore the mark: the management API did, the gateway answered
    `malformed_json` to the same body."""
    app_id, secret = await _hits(client)
    body = {"appId": app_id, "api": "hit", "version": "latest", "args": {"n": 1}}
    headers = {"X-Api-Key": secret, "Content-Type": "application/json"}
    content = BOM + json.dumps(body).encode()
    called = await client.post(INVOCATIONS, content=content, headers=headers)
    assert data_of(called)["total"] == 1
    user = await register(client)
    made = await client.post(
        "/api/v1/workspaces",
        content=BOM + b'{"name": "Marked"}',
        headers={**user.headers, "Content-Type": "application/json"},
    )
    assert data_of(made)["id"]
    assert "Marked" in await _names(client, user)


@pytest.mark.parametrize("content", [BOM, BOM + BOM + b"{}", b" " + BOM + b"{}"])
async def test_a_mark_alone_or_repeated_is_malformed_on_both_edges(
    client: AsyncClient, content: bytes
) -> None:
    """One mark, at the very start, is all a parser may skip."""
    app_id, secret = await _hits(client)
    headers = {"X-Api-Key": secret, "Content-Type": "application/json"}
    called = await client.post(INVOCATIONS, content=content, headers=headers)
    assert_error(called, 400, "malformed_json")
    assert await total(client, secret, app_id) == 0
    user = await register(client)
    made = await client.post(
        "/api/v1/workspaces",
        content=content,
        headers={**user.headers, "Content-Type": "application/json"},
    )
    assert_error(made, 400, "malformed_json")


# --- JSON in another encoding than UTF-8 --------------------------------------------------------


def _encoded(text: str, encoding: str) -> bytes:
    """`text` in `encoding`; `cesu` is UTF-8 with a character outside the BMP written as two
    encoded surrogates (CESU-8), which no UTF-8 decoder accepts."""
    if encoding == "cesu":
        return text.encode().replace("😀".encode(), "\ud83d\ude00".encode("utf-8", "surrogatepass"))
    return text.encode(encoding)


NOT_UTF8 = ["utf-16", "utf-16-le", "utf-16-be", "utf-32", "utf-32-le", "utf-32-be", "cesu"]


@pytest.mark.parametrize("encoding", NOT_UTF8)
@pytest.mark.parametrize("idempotent", [False, True])
async def test_json_that_is_not_utf8_is_malformed_on_both_edges(
    client: AsyncClient, encoding: str, idempotent: bool
) -> None:
    """RFC 8259 §8.1: JSON between systems is UTF-8. The gateway refused UTF-16 and UTF-32;
    the management API read them (Python's `json.loads` guesses the encoding of bytes) and
    UTF-8 carrying encoded surrogates, so one body was an error on one edge and a write on the
    other. Nothing runs or is created."""
    app_id, secret = await _hits(client)
    body = {"appId": app_id, "api": "hit", "version": "latest", "args": {"n": 1, "note": "😀"}}
    extra = {"Idempotency-Key": f"enc-{encoding}"} if idempotent else {}
    headers = {"X-Api-Key": secret, "Content-Type": "application/json", **extra}
    called = await client.post(
        INVOCATIONS,
        content=_encoded(json.dumps(body, ensure_ascii=False), encoding),
        headers=headers,
    )
    assert_error(called, 400, "malformed_json")
    assert await total(client, secret, app_id) == 0
    user = await register(client)
    before = await _names(client, user)
    made = await client.post(
        "/api/v1/workspaces",
        content=_encoded('{"name": "Wide 😀"}', encoding),
        headers={**user.headers, "Content-Type": "application/json; charset=utf-8", **extra},
    )
    data = assert_error(made, 400, "malformed_json")
    assert data["errors"] == [{"field": "body", "message": "is not valid JSON"}]
    assert await _names(client, user) == before
    # The same body in UTF-8 (with or without a mark) is a workspace like any other.
    made = await client.post(
        "/api/v1/workspaces",
        content=BOM + '{"name": "Wide 😀"}'.encode(),
        headers={**user.headers, "Content-Type": "application/json"},
    )
    assert data_of(made)["id"]
