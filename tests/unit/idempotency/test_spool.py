"""A keyed management request's body: hashed as it arrives, in memory up to its limit and in a
temporary file beyond, handed to the route whole and in order."""

from starlette.types import Message, Receive

from apiforge.idempotency import spool
from apiforge.idempotency.keys import fingerprint, fingerprint_key, legacy_fingerprint
from apiforge.idempotency.spool import SpooledBody

KEY = fingerprint_key("server-secret-" + "s" * 40)


def _client(chunks: list[bytes]) -> tuple[list[Message], Receive]:
    sent: list[Message] = [
        {"type": "http.request", "body": chunk, "more_body": n < len(chunks) - 1}
        for n, chunk in enumerate(chunks)
    ]
    queue: list[Message] = [*sent, {"type": "http.disconnect"}]

    async def receive() -> Message:
        return queue.pop(0)

    return sent, receive


async def _replayed(body: SpooledBody, receive: Receive) -> tuple[bytes, list[Message]]:
    replay = body.replaying(receive)
    messages = [await replay()]
    while messages[-1].get("more_body"):
        messages.append(await replay())
    messages.append(await replay())  # then the client's own messages
    return b"".join(m.get("body", b"") for m in messages), messages


async def test_a_large_body_goes_to_a_file_and_comes_back_whole() -> None:
    chunks = [bytes([n]) * (spool.CHUNK_BYTES + n) for n in range(40)]  # ~2.5 MiB
    _, receive = _client(chunks)
    with SpooledBody(KEY, "POST", "/api/v1/files", "a=1") as body:
        await body.read_from(receive)
        whole = b"".join(chunks)
        assert body.size == len(whole)
        assert body.on_disk
        assert body.fingerprint() == fingerprint(KEY, "POST", "/api/v1/files", "a=1", whole)
        legacy = legacy_fingerprint("POST", "/api/v1/files", "a=1", [whole])
        assert body.legacy_fingerprint() == legacy  # read again, and the spool rewound
        replayed, messages = await _replayed(body, receive)
    assert replayed == whole
    assert all(len(m.get("body", b"")) <= spool.CHUNK_BYTES for m in messages)
    assert messages[-1] == {"type": "http.disconnect"}


async def test_a_small_or_empty_body_stays_in_memory() -> None:
    for chunks in ([b'{"name": "Shop"}'], [b""]):
        _, receive = _client(chunks)
        with SpooledBody(KEY, "PATCH", "/api/v1/apps/x", "") as body:
            await body.read_from(receive)
            assert not body.on_disk
            expected = fingerprint(KEY, "PATCH", "/api/v1/apps/x", "", chunks[0])
            assert body.fingerprint() == expected
            replayed, messages = await _replayed(body, receive)
        assert replayed == chunks[0]
        assert messages[0]["more_body"] is False
