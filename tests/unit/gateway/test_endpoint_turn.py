"""The gateway endpoint on the embedded database lets the loop take a turn before a call's stages
(`GatewayEndpoint._handle`): what was ready to run before the call runs first. On PostgreSQL (no
shared SQLite reader) the stages start at once."""

import asyncio
from typing import Any

from sqlalchemy.ext.asyncio import create_async_engine
from starlette.types import Message

from apiforge.core.settings import Settings
from apiforge.gateway.context import GatewayContext
from apiforge.gateway.endpoint import GatewayEndpoint
from apiforge.gateway.stage import GatewayState


class Recorder:
    """A stage that notes whether the callback scheduled before the call had run."""

    name = "recorder"

    def __init__(self, ran: list[str]) -> None:
        self.ran = ran
        self.seen: list[str] | None = None

    async def on_request(self, ctx: GatewayContext) -> None:
        self.seen = list(self.ran)
        ctx.body = b"{}"


async def stages_saw(reader: Any) -> list[str] | None:
    engine = create_async_engine("sqlite+aiosqlite://")
    state = GatewayState(settings=Settings(), db=engine, engine=None, reader=reader)  # type: ignore[arg-type]
    ran: list[str] = []
    stage = Recorder(ran)
    endpoint = GatewayEndpoint(state, [stage], [])
    scope = {
        "type": "http",
        "method": "POST",
        "path": "/api/v1/invocations",
        "headers": [(b"content-type", b"application/json")],
        "query_string": b"",
        "client": ("127.0.0.1", 1234),
    }
    sent: list[Message] = []

    async def receive() -> Message:
        return {"type": "http.request", "body": b"{}", "more_body": False}

    async def send(message: Message) -> None:
        sent.append(message)

    asyncio.get_running_loop().call_soon(ran.append, "ready before the call")
    await endpoint(scope, receive, send)
    await engine.dispose()
    assert sent[0]["status"] == 200
    return stage.seen


async def test_on_the_embedded_database_what_was_ready_runs_before_the_stages() -> None:
    assert await stages_saw(reader=object()) == ["ready before the call"]


async def test_without_the_shared_reader_the_stages_start_at_once() -> None:
    assert await stages_saw(reader=None) == []
