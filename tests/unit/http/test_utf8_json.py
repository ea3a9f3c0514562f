"""`Utf8JsonMiddleware`: a JSON body is checked as UTF-8 across the chunks it arrives in."""

import pytest
from starlette.types import Message, Receive, Scope, Send

from apiforge.http.middleware import Utf8JsonMiddleware

TEXT = '{"name": "Café 😀"}'


async def _read(chunks: list[bytes], content_type: bytes, path: str = "/api/v1/x") -> bytes:
    """The body as the route reads it, through the middleware."""
    pending = [
        {"type": "http.request", "body": chunk, "more_body": i < len(chunks) - 1}
        for i, chunk in enumerate(chunks)
    ]
    read = b""

    async def receive() -> Message:
        return pending.pop(0)

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        nonlocal read
        more = True
        while more:
            message = await receive()
            read += message.get("body", b"")
            more = message.get("more_body", False)

    async def send(message: Message) -> None:
        pass

    scope = {"type": "http", "path": path, "headers": [(b"content-type", content_type)]}
    await Utf8JsonMiddleware(app, documents=["/doc"])(scope, receive, send)
    return read


async def test_a_character_split_between_chunks_is_utf8() -> None:
    raw = TEXT.encode()
    chunks = [raw[i : i + 1] for i in range(len(raw))]  # every multibyte character split
    assert await _read(chunks, b"application/json") == raw


@pytest.mark.parametrize("content_type", [b"application/json", b"Application/Problem+JSON; x=y"])
@pytest.mark.parametrize(
    "raw", [TEXT.encode("utf-16"), TEXT.encode("utf-32-le"), TEXT.encode()[:-3] + b"\xf0\x9f"]
)
async def test_other_encodings_and_a_cut_character_are_refused(
    raw: bytes, content_type: bytes
) -> None:
    with pytest.raises(UnicodeDecodeError):
        await _read([raw[:5], raw[5:]], content_type)


async def test_other_media_types_and_documents_are_left_alone() -> None:
    raw = TEXT.encode("utf-16")
    assert await _read([raw], b"text/plain") == raw
    assert await _read([raw], b"application/json", path="/doc") == raw
