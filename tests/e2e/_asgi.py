"""Driving the app as a server would, below the HTTP client: raw ASGI messages, pool checkouts."""

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from fastapi import FastAPI
from sqlalchemy import event
from starlette.types import Message


async def raw_post(
    app: FastAPI, path: str, headers: list[tuple[bytes, bytes]], incoming: list[Message]
) -> list[Message]:
    """POST to `app` as a server would, the client sending `incoming` (then disconnecting); the
    messages the app sent."""
    sent: list[Message] = []

    async def receive() -> Message:
        return incoming.pop(0) if incoming else {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        sent.append(dict(message))

    scope: dict[str, Any] = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": headers,
        "client": ("127.0.0.1", 50000),
        "server": ("testserver", 80),
    }
    await app(scope, receive, send)
    return sent


@contextmanager
def pool_checkouts(app: FastAPI) -> Iterator[list[int]]:
    """The connections checked out of the app's pool meanwhile, however they were asked for."""
    seen: list[int] = []

    def counted(*_args: object) -> None:
        seen.append(1)

    pool = app.state.engine.sync_engine.pool
    event.listen(pool, "checkout", counted)
    try:
        yield seen
    finally:
        event.remove(pool, "checkout", counted)
