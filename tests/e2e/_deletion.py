"""Helpers for the deletion races: step and field definitions, and one paused race."""

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from httpx import Response

# How long the second request gets to reach what the paused first one holds (or to finish, if
# nothing is in its way) before the first goes on. The outcome asserted holds whatever the wait.
REACHING_SECONDS = 1.5
PRICE = 10
TEXT: dict[str, Any] = {"name": "text", "type": "string"}
TAG: dict[str, Any] = {"name": "tag", "type": "string", "indexed": True}
INDEXED = {"indexed": [TEXT, TAG], "unindexed": [TEXT]}
ID = {"name": "id", "type": "string", "required": True, "max": 64}
# Steps into a `notes` collection, and a right of the app's user system.
GRANT = {
    "id": "right",
    "type": "userRight",
    "action": "grant",
    "userId": "u1",
    "target": "notes",
    "rights": ["read"],
}
INSERT = {"id": "note", "type": "insert", "collection": "notes", "data": {"text": "new"}}
UPDATE = {
    "id": "note",
    "type": "update",
    "collection": "notes",
    "recordId": {"expr": "args.id"},
    "data": {"text": "changed"},
}
TALLY = {"id": "notes", "type": "count", "collection": "notes"}


async def paused_race(
    monkeypatch: pytest.MonkeyPatch,
    target: Any,
    name: str,
    first: Callable[[], Awaitable[Response]],
    second: Callable[[], Awaitable[Response]],
) -> tuple[Response, Response]:
    """Pause `first` once `target.<name>` returned (holding what it locked), start `second`,
    give it time to go as far as it can, let `first` go on; both answers, in that order."""
    holding, release = asyncio.Event(), asyncio.Event()
    original = getattr(target, name)

    async def paused(*args: Any, **kwargs: Any) -> Any:
        result = await original(*args, **kwargs)
        if not holding.is_set():
            holding.set()
            await release.wait()
        return result

    monkeypatch.setattr(target, name, paused)
    going = asyncio.ensure_future(first())
    waiting = asyncio.ensure_future(holding.wait())
    await asyncio.wait({waiting, going}, return_when=asyncio.FIRST_COMPLETED)
    assert holding.is_set(), going.result().text  # it answering first is a failure
    coming = asyncio.ensure_future(second())
    await asyncio.wait({coming}, timeout=REACHING_SECONDS)
    release.set()
    return await asyncio.wait_for(going, 30), await asyncio.wait_for(coming, 30)
